"""Make db_0003.json: the rows of a real database at migration 0003, written by Assay as it was
at commit bc785dd (before paradigms became plugins), for the migration tests.

Run it in a checkout of that commit (the code it drives no longer exists on main):

    git worktree add /tmp/assay-0003 bc785dd
    cd /tmp/assay-0003 && python /path/to/make_db_0003.py /path/to/tests/server/data/db_0003.json

Sessions in every state a study holds: completed, screened out, declined, consent only,
mid-practice, mid-main (live), and a preview mid-main.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from sqlalchemy import MetaData, create_engine, select

sys.path.insert(0, ".")

from server.catalog import launch_study  # noqa: E402
from server.extensions import get_db  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from stimuli.procedural import build_procedural_set  # noqa: E402
from tests.conftest import app_config, demo_spec  # noqa: E402
from tests.server.participant_client import Participant, complete  # noqa: E402

TABLES = ["images", "researchers", "stimulus_sets", "studies", "study_versions", "sessions",
          "platform_identities", "trial_responses"]


def plan_of(app, public_id):
    from server.models import ParticipantSession

    with app.app_context():
        db = get_db()
        return db.scalar(select(ParticipantSession).where(
            ParticipantSession.public_id == public_id)).plan


def main(out: Path) -> None:
    from server.app import create_app

    tmp = Path(tempfile.mkdtemp())
    stimuli = tmp / "procedural"
    build_procedural_set(stimuli, units_per_kind=2, n_queries=4, image_size=16, seed=3)
    url = f"sqlite:///{tmp / 'assay.db'}"
    upgrade(url)
    config = app_config(url, tmp)
    config["SECRET_KEY"] = "fixture-secret"
    app = create_app(config)
    spec = demo_spec("legacy-2afc", stimulus_set="procedural",
                     trials={"main": 6, "catch_rate": 0.34})
    with app.app_context():
        db = get_db()
        with db.begin():
            launch_study(db, spec, tmp / "study.toml")
    client = app.test_client()

    people = {}
    for name in ("done", "screened", "declined", "consent", "practice", "main", "preview"):
        pid = None if name == "preview" else f"LEGACY{name.upper()}"
        people[name] = Participant(client, "legacy-2afc", pid)
    plans = {}
    from server.tokens import verify

    for name, p in people.items():
        plans[name] = plan_of(app, verify("fixture-secret", p.token))
    complete(people["done"], plans["done"])
    complete(people["screened"], plans["screened"], catch_wrong=True)
    assert people["declined"].post("consent", {"agree": False}).status_code == 200
    people["practice"].start()
    first = plans["practice"][0]
    people["practice"].answer(first["index"], first["correct"])
    for name in ("main", "preview"):
        p = people[name]
        p.start()
        for t in plans[name]:
            if t["kind"] == "practice" and t["attempt"] == 1:
                p.answer(t["index"], t["correct"])
        mains = [t for t in plans[name] if t["kind"] != "practice"]
        for t in mains[:3]:
            p.answer(t["index"], "a", confidence=3, rt_ms=1234.5)

    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    dump = {"revision": "0003", "secret_key": "fixture-secret", "tables": {}}
    with engine.connect() as conn:
        for name in TABLES:
            rows = []
            for row in conn.execute(select(meta.tables[name])).mappings():
                values = {}
                for key, value in row.items():
                    if isinstance(value, bytes):
                        value = {"base64": base64.b64encode(value).decode()}
                    elif isinstance(value, datetime):
                        value = value.isoformat()
                    values[key] = value
                rows.append(values)
            dump["tables"][name] = rows
    out.write_text(json.dumps(dump, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{k} {len(v)}" for k, v in dump["tables"].items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
