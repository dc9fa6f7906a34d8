"""Tools beside the build steps: the sample-atlas generator, synthetic images and scoring against truth.

Not part of the steps' code version: editing them never invalidates a cached extraction.
"""
