"""A participant driven through the Flask test client, as the browser would."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from server.tokens import HEADER

TOKEN = re.compile(r'data-token="([^"]+)"')


class Participant:
    def __init__(self, client, slug: str, pid: str | None = None, **params: str) -> None:
        self.client = client
        query = {"PROLIFIC_PID": pid, "STUDY_ID": "ST", "SESSION_ID": "SE"} if pid else {}
        page = client.get(f"/s/{slug}", query_string={**query, **params})
        assert page.status_code == 200, page.get_data(as_text=True)
        self.token = TOKEN.search(page.get_data(as_text=True)).group(1)

    def get(self, path: str):
        return self.client.get(f"/api/{path}", headers={HEADER: self.token})

    def post(self, path: str, body: dict | None = None):
        return self.client.post(f"/api/{path}", json=body or {}, headers={HEADER: self.token})

    def state(self) -> dict:
        response = self.get("state")
        assert response.status_code == 200, response.json
        return response.json

    def start(self) -> dict:
        assert self.post("consent", {"agree": True}).status_code == 200
        assert self.post("instructions", {"seconds": 30}).status_code == 200
        return self.state()

    def answer(self, index: int, choice: str | int = "a", confidence: int = 2,
               rt_ms: float = 900.0):
        shown = datetime(2026, 1, 1, tzinfo=UTC)
        return self.post(
            "trials",
            {
                "trial_index": index,
                "answer": {"choice": choice, "confidence": confidence},
                "rt_ms": rt_ms,
                "presented_at": shown.isoformat(),
                "responded_at": (shown + timedelta(milliseconds=rt_ms)).isoformat(),
                "events": [{"type": "blur", "t": 10.0}],
            },
        )


def wrong_choice(key: str | int) -> str | int:
    """An answer other than ``key``: the other 2AFC query, or another intruder position."""
    if isinstance(key, str):
        return "b" if key == "a" else "a"
    return 0 if key != 0 else 1


def complete(participant: Participant, plan: list[dict], *, catch_wrong: bool = False,
             main_wrong_every: int = 0) -> dict:
    """Answer practice correctly once, then every main trial (correctly, but every
    ``main_wrong_every``-th wrongly if set; catch as asked)."""
    participant.start()
    for t in plan:
        if t["kind"] == "practice" and t["attempt"] > 1:
            continue
        wrong = (catch_wrong and t["kind"] == "catch") or (
            main_wrong_every > 0 and t["kind"] == "main" and t["index"] % main_wrong_every == 0)
        choice = wrong_choice(t["key"]) if wrong else t["key"]
        assert participant.answer(t["index"], choice).status_code == 200
    assert participant.post("questionnaire", {"answers": {"difficulty": "easy"}}).status_code == 200
    response = participant.post("finish")
    assert response.status_code == 200, response.json
    return response.json
