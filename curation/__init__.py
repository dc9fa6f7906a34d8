"""The build: runs the steps on each PDF, keeps the review queue and publishes manifest versions."""
