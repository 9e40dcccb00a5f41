"""Assay experiments."""
