"""A self-contained HTML report of a study, with its results as tidy CSV files beside it.

``write_report`` takes the tidy trial table, applies the study's exclusion rules (flagging,
never dropping), summarises accuracy against each paradigm's chance level, fits the mixed
models (with the units' standardized covariates), adds each paradigm's own sections and
renders ``templates/report.html.j2`` with the figures of analysis/plots.py embedded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from scipy import stats

import analysis
from analysis.covariates import (
    covariate_trends,
    numeric_covariates,
    standardize_covariates,
)
from analysis.exclusions import ExclusionResult, apply_exclusions
from analysis.plots import (
    level_names,
    palette,
    plot_accuracy,
    plot_confidence,
    plot_covariates,
    plot_forest,
    plot_funnel,
    plot_rt,
    plot_strip,
    png,
)
from analysis.summaries import accuracy_table, chance_tests, cluster_accuracy, utility_scores
from experiments.paradigms import PARADIGMS
from experiments.study import AnalysisPlan, Exclusions, StudySpec

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class ModelSpec:
    """A model for the report: an lme4 formula fitted to the included trials of ``kinds``,
    optionally restricted to some levels of some columns (``subset``)."""

    name: str
    formula: str
    family: str = "binomial"  # or "gaussian" (an LMM by REML)
    link: str = "logit"
    kinds: tuple[str, ...] = ("main",)
    subset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # column -> the level its treatment contrasts compare the others against (put first)
    reference: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFit:
    spec: ModelSpec
    result: analysis.GLMMResult | None
    warnings: tuple[str, ...]
    error: str | None
    nobs: int


def default_models(trials: pd.DataFrame) -> list[ModelSpec]:
    """Accuracy and log RT by condition with crossed participant and unit intercepts
    (intercept only when the included main trials have a single condition); and, when the
    units have an importance, accuracy on condition x layer with the standardized
    importance as a covariate; and accuracy by each paradigm's ``factor``
    (:func:`factor_models`)."""
    main = trials[(trials["trial_kind"] == "main") & ~trials["excluded"]]
    rhs = "condition" if main["condition"].nunique() > 1 else "1"
    random = "(1|participant) + (1|unit_id)"
    models = [
        ModelSpec("Accuracy (binomial GLMM, logit link)", f"correct ~ {rhs} + {random}"),
        ModelSpec("Response time (LMM on log RT, REML)", f"log(rt_ms) ~ {rhs} + {random}",
                  family="gaussian"),
    ]
    if "importance_z" in main and main["importance_z"].nunique() > 1:
        factors = [c for c in ("condition", "layer") if main[c].nunique() > 1]
        fixed = " * ".join(factors) if factors else "1"
        models.append(ModelSpec(
            "Accuracy with unit importance (binomial GLMM; importance z-scored within "
            "source x layer)", f"correct ~ {fixed} + importance_z + {random}"))
    return models + factor_models(main, random)


def factor_models(main: pd.DataFrame, random: str) -> list[ModelSpec]:
    """Accuracy by a paradigm's ``factor`` (an export column, e.g. the drawer of a drawing),
    crossed with its ``factor_by`` (e.g. the session) where that varies, on that paradigm's
    trials, where it has more than one level: the comparison a paradigm asks for without
    importing the analysis."""
    names = level_names(main["paradigm"])
    models = []
    for name in names:
        paradigm = PARADIGMS.get(name)
        factor = paradigm.factor if paradigm is not None else None
        rows = main[main["paradigm"].astype(str) == name]
        if factor is None or factor not in rows or rows[factor].nunique() < 2:
            continue
        reference = {factor: paradigm.factor_reference} if paradigm.factor_reference else {}
        by = paradigm.factor_by
        fixed = f"{factor} * {by}" if by in rows and rows[by].nunique() > 1 else factor
        models.append(ModelSpec(
            f"Accuracy by {fixed.replace(' * ', ' x ')} (binomial GLMM, logit link"
            + (f"; {name} trials)" if len(names) > 1 else ")"),
            f"correct ~ {fixed} + {random}", subset={"paradigm": (name,)},
            reference=reference))
    return models


def model_data(trials: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    t = trials[trials["trial_kind"].isin(list(spec.kinds)) & ~trials["excluded"]]
    for col, levels in spec.subset.items():
        t = t[t[col].isin(list(levels))]
    if spec.family == "gaussian":
        t = t[t["rt_ms"] > 0]  # log(rt) of a missing or zero time is undefined
    used = [c for c in t.columns if c.endswith("_z") and c in spec.formula]
    t = t.dropna(subset=used)  # a unit without the covariate cannot enter that model
    t = t.copy()
    for col, level in spec.reference.items():
        t = t[t[col].notna()].copy()
        levels = sorted(set(t[col].astype(str)), key=lambda v: (v != level, v))
        t[col] = pd.Categorical(t[col].astype(str), categories=levels)
    for col in t.columns:
        if isinstance(t[col].dtype, pd.CategoricalDtype):
            t[col] = t[col].cat.remove_unused_categories()
    return t


def fit_model(trials: pd.DataFrame, spec: ModelSpec) -> ModelFit:
    """Fit one model; its warnings (convergence, singular fit) and errors are kept for the
    report instead of stopping it."""
    data = model_data(trials, spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if spec.family == "gaussian":
                result = analysis.lmm(spec.formula, data, reml=True)
            else:
                result = analysis.glmm(spec.formula, data, family=spec.family,
                                       link=spec.link)
            error = None
        except (ValueError, np.linalg.LinAlgError) as exc:
            result, error = None, str(exc)
    notes = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return ModelFit(spec, result, notes, error, len(data))


# -- plots -----------------------------------------------------------------------------
def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def html_table(frame: pd.DataFrame) -> dict:
    """Columns and formatted rows for the template (which escapes them)."""
    return {"columns": [str(c) for c in frame.columns],
            "rows": [[_cell(v) for v in row] for row in frame.itertuples(index=False)]}


def _model_context(fit: ModelFit) -> dict:
    ctx = {"name": fit.spec.name, "formula": fit.spec.formula, "nobs": fit.nobs,
           "subset": ", ".join(f"{k} in {{{', '.join(v)}}}" for k, v in fit.spec.subset.items()),
           "kinds": ", ".join(fit.spec.kinds), "warnings": list(fit.warnings),
           "error": fit.error}
    r = fit.result
    if r is not None:
        ctx.update(summary=r.summary(), fixef=html_table(r.to_frame()),
                   random=html_table(r.random_frame()),
                   diagnostics=[("family", r.family), ("method", r.method),
                                ("observations", str(r.nobs)), ("log-likelihood",
                                                                f"{r.loglik:.2f}"),
                                ("AIC", f"{r.aic:.1f}"), ("BIC", f"{r.bic:.1f}"),
                                ("converged", "yes" if r.converged else "NO"),
                                ("singular fit", "YES" if r.singular else "no"),
                                ("optimizer", f"{r.optimizer}, {r.nfev} evaluations")])
    return ctx


def _model_frames(fits: Sequence[ModelFit]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    fixef, random, overview = [], [], []
    for fit in fits:
        key = {"model": fit.spec.name, "formula": fit.spec.formula}
        r = fit.result
        overview.append({**key, "nobs": fit.nobs, "family": r.family if r else None,
                         "method": r.method if r else None, "loglik": r.loglik if r else None,
                         "aic": r.aic if r else None, "bic": r.bic if r else None,
                         "converged": r.converged if r else False,
                         "singular": r.singular if r else None,
                         "warnings": " | ".join(fit.warnings), "error": fit.error})
        if r is not None:
            fixef.append(r.to_frame().assign(**key))
            random.append(r.random_frame().assign(**key))
    cols = ["model", "formula"]
    fx = pd.concat(fixef, ignore_index=True) if fixef else pd.DataFrame(columns=cols)
    rd = pd.concat(random, ignore_index=True) if random else pd.DataFrame(columns=cols)
    return (fx[cols + [c for c in fx.columns if c not in cols]],
            rd[cols + [c for c in rd.columns if c not in cols]], pd.DataFrame(overview))


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


# -- the report ------------------------------------------------------------------------
def write_report(trials: pd.DataFrame, rules: StudySpec | Exclusions | dict | None,
                 out_dir: str | Path, *, title: str | None = None,
                 models: Sequence[ModelSpec] | None = None,
                 baseline: str | Sequence[str] | None = None, n_boot: int = 2000,
                 seed: int = 0, source: str = "", notes: Sequence[str] = ()) -> Path:
    """Write ``report.html`` and the tidy CSV results into ``out_dir``; returns the HTML path.

    ``rules``: the study spec or its exclusion rules (None: only incomplete sessions are
    excluded). ``models``: the models to fit (default :func:`default_models`). ``baseline``:
    condition level(s) for the utility score (left out when None). ``notes``: paragraphs
    shown under the title. The bootstrap uses ``numpy.random.default_rng(seed)``.
    """
    if trials.empty:
        raise ValueError("no trials to report on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex: ExclusionResult = apply_exclusions(trials, rules)
    flagged = standardize_covariates(ex.trials)
    chance = sorted(float(c) for c in flagged["chance"].dropna().unique())
    rng = np.random.default_rng(seed)
    has_layer = flagged["layer"].notna().any()
    cells = ["condition", "layer"] if has_layer else ["condition"]
    acc_cells = accuracy_table(flagged, cells, n_boot=n_boot, seed=rng)
    acc_cond = accuracy_table(flagged, ["condition"], n_boot=n_boot, seed=rng)
    tests = chance_tests(flagged, cells)
    per_p = cluster_accuracy(flagged, "participant", ["condition"], included_only=False)
    per_p["excluded"] = per_p["participant"].astype(str).map(
        ex.sessions["excluded"].rename(index=str)).astype(bool)
    per_u = cluster_accuracy(flagged, "unit_id", ["condition"])
    trends = covariate_trends(per_u, flagged, numeric_covariates(flagged))
    funnel = ex.funnel
    utility = utility_scores(flagged, baseline, n_boot=n_boot, seed=rng) \
        if baseline is not None else None
    fits = [fit_model(flagged, s) for s in (models if models is not None
                                            else default_models(flagged))]
    plan = rules.analysis if isinstance(rules, StudySpec) else None
    confirmed = confirmatory(flagged, plan) if plan is not None else None
    fixef, random, overview = _model_frames(fits)

    main = flagged[(flagged["trial_kind"] == "main") & ~flagged["excluded"]]
    colors = palette(level_names(flagged["condition"]))
    figures = [
        ("Accuracy by condition" + (" and layer" if has_layer else ""),
         "Mean over participants of their proportion correct on main trials, with 95 % "
         "participant-bootstrap intervals; dashed: chance.",
         plot_accuracy(acc_cells, cells[-1], colors, chance), "wide"),
        ("Participants", "Each dot is a participant's accuracy on main trials; bar: mean "
         "of the included; red x: excluded.",
         plot_strip(per_p, "Accuracy per participant", "proportion correct", colors, chance),
         ""),
        ("Units", "Each dot is a unit's accuracy over included participants' main trials.",
         plot_strip(per_u, "Accuracy per unit", "proportion correct", colors, chance), ""),
        ("Response times", "", plot_rt(main, colors), ""),
    ]
    if "confidence" in main and main["confidence"].notna().any():
        figures.append(("Confidence", "", plot_confidence(main, colors, chance), ""))
    if not trends.empty:
        figures.append(("Units against covariates", "Each dot is a unit's accuracy over "
                        "included participants' main trials in a condition, against the "
                        "unit's covariate z-scored within source x layer (the scale a "
                        "model's covariate has); lines: least-squares fits; r: Pearson's "
                        "correlation over units.",
                        plot_covariates(per_u, flagged, trends, colors, chance),
                        "wide" if trends["covariate"].nunique() > 1 else ""))
    for fit in fits:  # the first model that fitted, as a forest plot
        if fit.result is not None:
            figures.append(("Fixed effects", f"{fit.spec.name}: estimates with 95 % Wald "
                            "intervals; dashed: no effect.",
                            plot_forest(fit.result, fit.spec.formula), ""))
            break
    sections = [
        section for paradigm in level_names(flagged["paradigm"]) if paradigm in PARADIGMS
        for section in PARADIGMS[paradigm].report_sections(
            flagged[flagged["paradigm"].astype(str) == paradigm])
    ]

    csv = {"exclusions.csv": ex.table, "exclusion_funnel.csv": funnel,
           "participants.csv": ex.sessions.reset_index(),
           "accuracy_by_condition.csv": acc_cond, "accuracy.csv": acc_cells,
           "chance_tests.csv": tests, "units.csv": per_u, "models.csv": overview,
           "model_fixef.csv": fixef, "model_random.csv": random,
           "trials_flagged.csv": flagged}
    if utility is not None:
        csv["utility.csv"] = utility
    if not trends.empty:
        csv["covariate_trends.csv"] = trends
    for section in sections:  # a paradigm's tables too, named after their titles
        for title, table in section.tables:
            csv.setdefault(re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") + ".csv",
                           table)
    for name, frame in csv.items():
        frame.to_csv(out / name, index=False)

    studies = ", ".join(level_names(flagged["study"]))
    n_excluded = int(ex.sessions["excluded"].sum())
    context = {
        "title": title or f"Assay report: {studies}",
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": source, "notes": list(notes),
        "facts": [("study", studies),
                  ("versions", ", ".join(str(v) for v in sorted(
                      flagged["study_version"].dropna().unique()))),
                  ("participants", f"{len(ex.sessions)} ({n_excluded} excluded)"),
                  ("trials", f"{len(flagged)} ({len(main)} main trials of included "
                             "participants)"),
                  ("conditions", ", ".join(level_names(flagged["condition"]))),
                  ("modes", ", ".join(level_names(flagged["mode"]))),
                  ("bootstrap", f"{n_boot} resamples, seed {seed}")],
        "exclusions": html_table(ex.table.drop(columns="rule")),
        "funnel": html_table(funnel), "funnel_src": plot_funnel(funnel),
        "excluded": html_table(ex.sessions.loc[ex.sessions["excluded"], ["condition",
                               "exclusion_reason"]].reset_index()),
        "accuracy_cond": html_table(acc_cond),
        "accuracy_cells": html_table(acc_cells),
        "tests": html_table(tests),
        "utility": html_table(utility) if utility is not None else None,
        "covariate_trends": html_table(trends) if not trends.empty else None,
        "figures": [{"title": t, "caption": c, "src": s, "wide": w} for t, c, s, w in figures],
        "models": [_model_context(f) for f in fits],
        "confirmatory": confirmed,
        "sections": [{"title": x.title, "paragraphs": list(x.paragraphs),
                      "tables": [(name, html_table(t)) for name, t in x.tables],
                      "figures": [(name, png(f)) for name, f in x.figures]}
                     for x in sections],
        "chance": ", ".join(f"{c:.3g}" for c in chance),
        "files": sorted(csv),
    }
    html = _environment().get_template("report.html.j2").render(**context)
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def report_command(study: str, trials: pd.DataFrame, *, spec: StudySpec | None = None,
                   rules_note: str = "", source: str = "", out_dir: str | Path | None = None,
                   n_boot: int = 2000, seed: int = 0) -> Path:
    """``assay report STUDY``: the report of ``trials`` (a tidy table of that study, from an
    export file or the study database) with the exclusion rules of ``spec`` (none when
    None), written into ``out_dir`` (default ``report-STUDY``); returns the path of
    ``report.html``. ``source`` and ``rules_note`` say where the trials and rules came from.
    """
    if trials.empty:
        raise ValueError(f"study {study!r}: no trials to report on")
    found = level_names(trials["study"])
    if found != [study]:
        raise ValueError(f"the trials are of study {', '.join(found)}, not {study!r}")
    if spec is not None and spec.slug != study:
        raise ValueError(f"the exclusion rules are of study {spec.slug!r}, not {study!r}")
    note = rules_note or ("no exclusion rules given: only incomplete sessions are excluded"
                          if spec is None else "")
    return write_report(trials, spec, out_dir or f"report-{study}",
                        title=spec.title if spec is not None else None,
                        source="; ".join(x for x in (source, note) if x), n_boot=n_boot,
                        seed=seed)


def confirmatory(trials: pd.DataFrame, plan: AnalysisPlan) -> dict:
    """The pre-registered test on the included main trials: its estimate, z, p (one-sided
    where the plan says so) and decision, and every way the analysis had to deviate."""
    fit = fit_model(trials, ModelSpec("Confirmatory (pre-registered)", plan.formula))
    out = {"formula": plan.formula, "term": plan.term, "alpha": plan.alpha,
           "alternative": plan.alternative, "nobs": fit.nobs, "deviations": [],
           "warnings": list(fit.warnings)}
    if fit.error is not None:
        out["deviations"].append(f"the confirmatory model could not be fitted: {fit.error}")
        return out
    result = fit.result
    if plan.term not in result.params.index:
        out["deviations"].append(f"the model has no term {plan.term!r} (terms: "
                                 f"{', '.join(result.params.index)})")
        return out
    z = float(result.zvalues[plan.term])
    p = {"two-sided": 2 * stats.norm.sf(abs(z)), "greater": stats.norm.sf(z),
         "less": stats.norm.cdf(z)}[plan.alternative]
    out.update(estimate=float(result.params[plan.term]), se=float(result.se[plan.term]),
               z=z, p=float(p), significant=bool(p < plan.alpha))
    return out  # a singular or unconverged fit is in its warnings, not a deviation
