"""Assay server."""
