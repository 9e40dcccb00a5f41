"""Neurons: the channels of a layer, each its own unit."""

from __future__ import annotations

from stimuli.sources.base import UnitSource


class Neuron(UnitSource):
    id = "neuron"
    revision = 1
    description = "the layer's channels (individual neurons)"
