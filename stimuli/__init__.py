"""Assay stimuli."""
