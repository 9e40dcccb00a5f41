"""Prolific operations and participants' rights on the command line: platform IDs by status
for Prolific's bulk tools, and platform IDs purged some days after a study closes (the
pseudonymous keys stay, so exports still flag repeat participation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
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
