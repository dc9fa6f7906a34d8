"""The four build steps of MM-Retinal as plain Python: extract, align, classify, clean + translate."""

__version__ = "0.1.0"
