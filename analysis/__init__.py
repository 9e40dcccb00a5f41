"""Assay analysis: mixed models that match lme4 (binomial GLMM by Laplace, LMM by (RE)ML).

The names below are loaded on first use, so that importing a light module of the package
(``analysis.schema``, which the server's export needs) does not import scipy with them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Design": "analysis.design",
    "build_design": "analysis.design",
    "glmm": "analysis.fit",
    "lmm": "analysis.fit",
    "Formula": "analysis.formula",
    "parse_formula": "analysis.formula",
    "ConvergenceWarning": "analysis.result",
    "GLMMResult": "analysis.result",
    "RandomEffect": "analysis.result",
    "SingularFitWarning": "analysis.result",
    "anova": "analysis.result",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
