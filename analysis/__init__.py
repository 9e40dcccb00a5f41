"""Assay analysis."""
