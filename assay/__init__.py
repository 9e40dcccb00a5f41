"""Assay: human studies of neural-network explanations."""

__version__ = "0.1.0"
