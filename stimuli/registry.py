"""The registries of models, unit sources and explanation methods: plain dicts, filled here.

Adding a method is one module in stimuli/methods/ plus one line below. Other packages can
add their own through entry points (groups ``assay.models``, ``assay.sources`` and
``assay.methods``, each naming a class), loaded by :func:`load_plugins`.
"""

from __future__ import annotations

import importlib.metadata
import logging

from stimuli.decisions.methods import DECISION_METHODS
from stimuli.decisions.models import ShortcutLoader
from stimuli.drawings.build import Drawings
from stimuli.methods.accentuation import Accentuation
from stimuli.methods.base import Method
from stimuli.methods.exemplars import Exemplars
from stimuli.methods.fourier import Fourier
from stimuli.methods.maco import Maco
from stimuli.model_loaders import (
    DemoLoader,
    FactoryLoader,
    ModelLoader,
    TimmLoader,
    TorchvisionLoader,
)
from stimuli.sources.base import UnitSource
from stimuli.sources.dictionary import NMFSource, SAESource
from stimuli.sources.logit import ClassLogit
from stimuli.sources.neuron import Neuron

log = logging.getLogger(__name__)

MODELS: dict[str, type[ModelLoader]] = {
    "demo": DemoLoader,
    "factory": FactoryLoader,
    "torchvision": TorchvisionLoader,
    "timm": TimmLoader,
    "shortcut": ShortcutLoader,
}

SOURCES: dict[str, type[UnitSource]] = {
    "neuron": Neuron,
    "nmf": NMFSource,
    "sae": SAESource,
    "logit": ClassLogit,
}

METHODS: dict[str, type[Method]] = {
    "exemplars": Exemplars,
    "maco": Maco,
    "fourier": Fourier,
    "accentuation": Accentuation,
    "drawings": Drawings,
    **DECISION_METHODS,  # attribution maps and CRAFT concepts of decisions
}

_GROUPS = {"assay.models": (MODELS, ModelLoader), "assay.sources": (SOURCES, UnitSource),
           "assay.methods": (METHODS, Method)}


def load_plugins() -> list[str]:
    """Register the classes other installed packages declare as entry points; returns
    'group:name' for each one added. A name already taken or a class of the wrong kind is
    refused with a ValueError naming the package's entry point."""
    added = []
    for group, (registry, base) in _GROUPS.items():
        for ep in importlib.metadata.entry_points(group=group):
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise ValueError(f"entry point {group}:{ep.name} ({ep.value}) is not a "
                                 f"{base.__name__} subclass")
            if getattr(cls, "id", None) != ep.name:
                raise ValueError(f"entry point {group}:{ep.name} names a class whose id is "
                                 f"{getattr(cls, 'id', None)!r}")
            if ep.name in registry and registry[ep.name] is not cls:
                raise ValueError(f"entry point {group}:{ep.name}: the id is taken by "
                                 f"{registry[ep.name].__module__}")
            registry[ep.name] = cls
            added.append(f"{group}:{ep.name}")
    return added

