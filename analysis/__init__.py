"""Assay analysis: mixed models that match lme4 (binomial GLMM by Laplace, LMM by (RE)ML)."""

from analysis.design import Design, build_design
from analysis.fit import glmm, lmm
from analysis.formula import Formula, parse_formula
from analysis.result import (
    ConvergenceWarning,
    GLMMResult,
    RandomEffect,
    SingularFitWarning,
    anova,
)

__all__ = [
    "ConvergenceWarning",
    "Design",
    "Formula",
    "GLMMResult",
    "RandomEffect",
    "SingularFitWarning",
    "anova",
    "build_design",
    "glmm",
    "lmm",
    "parse_formula",
]
