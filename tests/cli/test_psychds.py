"""The psych-DS export, checked against the published psych-DS schema (1.5.0, vendored from
github.com/psych-ds/psych-DS, schema_model/versions/jsons/1.5.0/schema.json): the rules
for the dataset description, data file names and columns, read from the schema itself."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from server.psychds import keyword_value
from tests.cli.test_cli import launched_db, run, study_file  # noqa: F401 (fixtures)

SCHEMA = json.loads((Path(__file__).parents[1] / "server" / "data" /
                     "psych-ds-schema-1.5.0.json").read_text())


def violations(root: Path) -> list[str]:
    """What the schema's error-level rules find wrong with the dataset at ``root``."""
    rules, problems = SCHEMA["rules"], []
    core = rules["files"]["common"]["core"]["dataset_description"]
    description = root / (core["stem"] + core["extensions"][0])
    if not description.is_file():
        return [core["code"]]
    meta = json.loads(description.read_text())
    compiled = rules["compiled_metadata"]["CompiledMetadata"]
    namespace = compiled["namespace"].rstrip("/").split("://")[1]  # schema.org
    if namespace not in str(meta.get("@context", "")):
        problems.append("UnknownNamespace")
    if meta.get("@type") not in ("Dataset", "https://schema.org/Dataset"):
        problems.append("IncorrectDatasetType")
    problems += [f"JsonKeyRequired: {k}" for k, need in compiled["fields"].items()
                 if need == "required" and k not in meta]
    datafile = rules["files"]["tabular_data"]["data"]["Datafile"]
    files = [p for p in (root / datafile["baseDir"]).rglob("*")
             if p.suffix in datafile["extensions"]]
    valid = [p for p in files if re.fullmatch(datafile["fileRegex"], p.name)]
    if not valid:
        problems.append(datafile["code"])
    problems += [f"FilenameKeywordFormattingError: {p.name}" for p in files if p not in valid]
    names = {v["name"] if isinstance(v, dict) else v for v in meta.get("variableMeasured", [])}
    columns: set[str] = set()
    for path in valid:
        with path.open(newline="") as f:
            header = next(csv.reader(f))
        if len(header) != len(set(header)):
            problems.append(f"CSVHeaderRepeated: {path.name}")
        columns |= set(header)
    if rules["csv_data"]["Datafile"]["columnsMatchMetadata"]:
        problems += [f"CsvColumnMissingFromMetadata: {c}" for c in sorted(columns - names)]
        problems += [f"VariableMissingFromCsvColumns: {c}" for c in sorted(names - columns)]
    return problems


def test_the_checker_catches_what_the_schema_forbids(tmp_path):
    assert violations(tmp_path) == ["MISSING_DATASET_DESCRIPTION"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "trials.csv").write_text("a,b\n1,2\n")
    (tmp_path / "dataset_description.json").write_text(json.dumps(
        {"@context": "https://schema.org", "@type": "Dataset", "name": "x",
         "variableMeasured": ["a", "c"]}))
    assert violations(tmp_path) == [
        "JsonKeyRequired: description", "MISSING_DATAFILE",
        "FilenameKeywordFormattingError: trials.csv", "VariableMissingFromCsvColumns: a",
        "VariableMissingFromCsvColumns: c"]
    (tmp_path / "data" / "trials.csv").rename(tmp_path / "data" / "study-x_data.csv")
    assert violations(tmp_path) == [
        "JsonKeyRequired: description", "CsvColumnMissingFromMetadata: b",
        "VariableMissingFromCsvColumns: c"]


def test_psych_ds_export_passes_the_schema_and_reads_back(tmp_path, launched_db):  # noqa: F811
    out = tmp_path / "dataset"
    result = run("export", "demo-2afc", "--psych-ds", out, "--out", tmp_path / "t.csv",
                 "--database-url", launched_db)
    assert result.exit_code == 0, result.output
    assert violations(out) == []
    (data_file,) = (out / "data").glob("*_data.csv")
    assert data_file.name == "study-demo2afc_data.csv"
    frame = pd.read_csv(data_file)
    assert frame.equals(pd.read_csv(tmp_path / "t.csv"))  # the same table as the export
    meta = json.loads((out / "dataset_description.json").read_text())
    assert meta["schemaVersion"] == "1.5.0" and meta["name"]
    assert all(v["description"] for v in meta["variableMeasured"])
    again = run("export", "demo-2afc", "--psych-ds", out, "--database-url", launched_db)
    assert again.exit_code != 0 and "already holds a psych-DS dataset" in again.output
    assert run("export", "demo-2afc", "--database-url", launched_db).exit_code != 0


def test_keyword_values_are_letters_and_digits():
    assert keyword_value("demo-2afc_v2") == "demo2afcv2"
    with pytest.raises(ValueError, match="no letters or digits"):
        keyword_value("---")
