"""Checkpoint formats, read and written as dicts of NumPy arrays in the canonical layout."""
