"""Prolific operations and participants' rights on the command line: platform IDs by status
and bonuses for Prolific's bulk tools, and platform IDs purged some days after a study
closes (the pseudonymous keys stay, so exports still flag repeat participation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import DateTime, bindparam, create_engine, text

from tests.cli.test_cli import launched_db, run, study_file  # noqa: F401 (fixtures)


def test_lists_for_prolific_by_status(tmp_path, launched_db):  # noqa: F811
    engine = create_engine(launched_db)
    with engine.connect() as conn:
        status = dict(conn.execute(text(
            "SELECT p.platform_pid, s.status FROM platform_identities p "
            "JOIN sessions s ON s.id = p.session_id")).all())
    engine.dispose()
    for which, statuses in (("approve", {"completed"}),
                            ("return", {"screened_out", "declined", "withdrawn"})):
        out = tmp_path / f"{which}.csv"
        result = run("prolific", "demo-2afc", "--list", which, "--out", out,
                     "--database-url", launched_db)
        assert result.exit_code == 0, result.output
        listed = list(pd.read_csv(out, dtype=str)["participant_id"].dropna())
        assert listed == sorted((p for p, s in status.items() if s in statuses),
                                key=list(status).index)
    assert status["PID-R-1"] == "completed"


def test_bonus_list_for_prolific(tmp_path, launched_db):  # noqa: F811
    engine = create_engine(launched_db)
    with engine.connect() as conn:
        sessions = {pid: (status, json.loads(plan) if isinstance(plan, str) else plan)
                    for pid, status, plan in conn.execute(text(
                        "SELECT p.platform_pid, s.status, s.plan FROM platform_identities p "
                        "JOIN sessions s ON s.id = p.session_id"))}
    engine.dispose()
    # by hand: launched_db answers every third main trial wrongly; PID-R-2 was screened out
    assert sessions["PID-R-2"][0] == "screened_out"
    correct = sum(1 for t in sessions["PID-R-1"][1] if t["kind"] == "main" and t["index"] % 3)
    out = tmp_path / "bonus.csv"
    result = run("prolific", "demo-2afc", "--list", "bonus", "--bonus-per-correct", "0.13",
                 "--out", out, "--database-url", launched_db)
    assert result.exit_code == 0, result.output
    pence = 13 * correct
    assert out.read_text() == f"PID-R-1,{pence // 100}.{pence % 100:02d}\n"
    assert f"wrote 1 participant ID(s) to {out} ({pence / 100:.2f} in total)" in result.output
    unruled = run("prolific", "demo-2afc", "--list", "bonus", "--out", out,
                  "--database-url", launched_db)
    assert unruled.exit_code == 2
    assert "demo-2afc's study file sets no recruitment.bonus_per_correct" in unruled.output
    stray = run("prolific", "demo-2afc", "--list", "approve", "--bonus-per-correct", "1",
                "--out", out, "--database-url", launched_db)
    assert stray.exit_code == 2 and "--bonus-per-correct goes with --list bonus" in stray.output


@pytest.mark.parametrize("amount,message", [
    ("0", "must be more than 0 and at most 100, in whole pence or cents, not '0'"),
    ("-1", "not '-1'"),
    ("0.005", "not '0.005'"),
    ("100.01", "not '100.01'"),
    ("nan", "not 'nan'"),
    ("£1", "'£1' is not an amount such as 0.05"),
])
def test_bonus_amounts_that_prolific_could_not_pay_are_refused(tmp_path, amount, message):
    result = run("prolific", "x", "--list", "bonus", "--bonus-per-correct", amount,
                 "--out", tmp_path / "b.csv", "--database-url", f"sqlite:///{tmp_path}/none.db")
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "none.db").exists()


def test_platform_ids_are_purged_days_after_the_study_closes(tmp_path, launched_db):  # noqa: F811
    before = run("export", "demo-2afc", "--out", tmp_path / "a.csv", "--database-url",
                 launched_db)
    assert before.exit_code == 0
    assert run("study", "state", "demo-2afc", "closed", "--database-url",
               launched_db).exit_code == 0
    early = run("admin", "purge-ids", "--days", "30", "--database-url", launched_db)
    assert "purged 0 platform ID(s)" in early.output  # closed today: not yet
    engine = create_engine(launched_db)
    with engine.begin() as conn:
        stamp = bindparam("t", type_=DateTime(timezone=True))
        conn.execute(text("UPDATE studies SET closed_at = :t").bindparams(stamp),
                     {"t": datetime.now(UTC) - timedelta(days=31)})
    purged = run("admin", "purge-ids", "--days", "30", "--database-url", launched_db)
    assert purged.exit_code == 0 and "purged 2 platform ID(s)" in purged.output
    with engine.connect() as conn:
        pids = [r[0] for r in conn.execute(text("SELECT platform_pid FROM platform_identities"))]
        actions = [r[0] for r in conn.execute(text("SELECT action FROM audit_log ORDER BY id"))]
    engine.dispose()
    assert all(p.startswith("purged-") for p in pids) and "PID-R-1" not in pids
    assert actions[-2:] == ["set_state", "purge_ids"]
    after = run("export", "demo-2afc", "--out", tmp_path / "b.csv", "--database-url",
                launched_db)
    assert after.exit_code == 0
    keys = [pd.read_csv(tmp_path / f)["participant_key"] for f in ("a.csv", "b.csv")]
    assert keys[0].equals(keys[1])  # the pseudonymous keys survive the purge
    again = run("admin", "purge-ids", "--days", "30", "--database-url", launched_db)
    assert "purged 0 platform ID(s)" in again.output
    listed = run("prolific", "demo-2afc", "--list", "approve", "--out", tmp_path / "x.csv",
                 "--database-url", launched_db)
    assert "wrote 0 participant ID(s)" in listed.output
