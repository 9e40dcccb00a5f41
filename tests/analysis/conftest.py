"""Fixtures for the analysis tests: the shared lme4 references and fits made once per session."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis import GLMMResult, SingularFitWarning

HERE = Path(__file__).resolve().parent
TIGHT = HERE / "data" / "lme4_tight.json"
SINGULAR = {"sim2afc_slope"}


def shared_dir() -> Path:
    """ASSAY_SHARED, or ../shared beside the repository root."""
    env = os.environ.get("ASSAY_SHARED")
    return Path(env) if env else HERE.parents[1].parent / "shared"


@pytest.fixture(scope="session")
def lme4_dir() -> Path:
    path = shared_dir() / "data" / "lme4"
    if not (path / "lme4_reference.json").exists():
        pytest.skip(f"lme4 reference data not found at {path} (set ASSAY_SHARED)")
    return path


@pytest.fixture(scope="session")
def reference(lme4_dir: Path) -> dict:
    return json.loads((lme4_dir / "lme4_reference.json").read_text())


@pytest.fixture(scope="session")
def tight_reference() -> dict:
    return json.loads(TIGHT.read_text())


def load_data(lme4_dir: Path, name: str) -> pd.DataFrame:
    """The reference data with R's factor codings (levels as in the R session)."""
    if name == "cbpp.csv":
        return pd.read_csv(lme4_dir / name, dtype={"herd": str, "period": str})
    if name == "sleepstudy.csv":
        return pd.read_csv(lme4_dir / name, dtype={"Subject": str})
    frame = pd.read_csv(lme4_dir / name, dtype={"participant": str, "item": str})
    frame["condition"] = pd.Categorical(frame["condition"], categories=["neurons", "dictionary"])
    return frame


@pytest.fixture(scope="session")
def datasets(lme4_dir: Path) -> dict[str, pd.DataFrame]:
    return {n: load_data(lme4_dir, n) for n in ("cbpp.csv", "sleepstudy.csv", "sim2afc.csv")}


@pytest.fixture(scope="session")
def fitted(reference: dict, datasets: dict[str, pd.DataFrame]) -> Callable[[str], GLMMResult]:
    """Fit a reference model by key, once per session; asserts the singular-fit warning."""
    cache: dict[str, GLMMResult] = {}

    def fit(key: str) -> GLMMResult:
        if key not in cache:
            ref = reference[key]
            data = datasets[ref["data"]]
            expect = pytest.warns(SingularFitWarning) if key in SINGULAR else \
                contextlib.nullcontext()
            with expect:
                if ref["family"] == "gaussian":
                    cache[key] = analysis.lmm(ref["formula"], data,
                                              reml=ref["method"] == "REML")
                else:
                    cache[key] = analysis.glmm(ref["formula"], data)
        return cache[key]

    return fit
