"""Stimulus sets of a model's decisions on images, explained by attribution maps and concepts."""
