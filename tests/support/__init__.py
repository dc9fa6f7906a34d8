"""Builders of small real artefacts that tests use (tiny translation packages)."""
