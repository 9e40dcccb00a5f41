"""The production server's settings (server/serve.py): read from ASSAY_* variables, a bad value
refused with a message that names it before anything starts; and PostgreSQL's statement
timeout, which bounds a stuck request now that no worker timeout does."""

from __future__ import annotations

import sys

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from assay.cli import main
from server.access_log import access_log_on
from server.app import create_app
from server.config import SECRET_VARIABLES
from server.db import unavailable
from server.serve import settings
from server.server_process import LISTENING, local_env, running_process, wait_until_answers
from tests.conftest import app_config, fresh_database


def test_defaults_serve_the_wsgi_app_with_respawned_workers_and_an_access_log():
    found = settings({})
    assert (found["address"], found["port"]) == ("127.0.0.1", 8000)
    assert found["target"] == "server.wsgi:app" and found["interface"].value == "wsgi"
    assert found["workers"] >= 1 and found["blocking_threads"] == 2
    assert found["respawn_failed_workers"] and access_log_on({})
    assert not found["log_access"], "granian's access log costs ten times the app's own"
    assert found["workers_lifetime"] is None


def test_variables_set_the_server():
    found = settings({"ASSAY_BIND": "[::]:9000", "ASSAY_WORKERS": "3", "ASSAY_THREADS": "1",
                      "ASSAY_ACCESS_LOG": "0", "ASSAY_WORKERS_LIFETIME": "3600",
                      "ASSAY_LOG_LEVEL": "WARNING"})
    assert (found["address"], found["port"]) == ("::", 9000)
    assert (found["workers"], found["blocking_threads"]) == (3, 1)
    assert found["workers_lifetime"] == 3600 and not access_log_on({"ASSAY_ACCESS_LOG": "0"})
    assert found["log_dictconfig"]["loggers"]["server"]["level"] == "WARNING"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ASSAY_BIND", "8000", "ASSAY_BIND must be HOST:PORT"),
    ("ASSAY_BIND", "0.0.0.0:99999", "ASSAY_BIND must be HOST:PORT"),
    ("ASSAY_WORKERS", "two", "ASSAY_WORKERS must be a whole number"),
    ("ASSAY_WORKERS", "0", "must be at least 1"),
    ("ASSAY_THREADS", "-1", "ASSAY_THREADS must not be negative"),
    ("ASSAY_WORKERS_LIFETIME", "30", "at least 60 seconds"),
    ("ASSAY_LOG_LEVEL", "loud", "ASSAY_LOG_LEVEL must be one of"),
])
def test_a_bad_setting_is_named_before_anything_starts(name, value, message, monkeypatch):
    with pytest.raises(ValueError, match=message):
        settings({name: value})
    monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["serve", "--production"])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.postgres
def test_a_statement_stuck_past_the_timeout_is_cancelled_as_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_STATEMENT_TIMEOUT_MS", "200")
    for url in fresh_database("postgres", tmp_path):
        app = create_app(app_config(url, tmp_path))
        engine = app.extensions["assay.engine"]
        try:
            with engine.connect() as conn, pytest.raises(OperationalError) as caught:
                conn.execute(text("SELECT pg_sleep(2)"))
            assert "statement timeout" in str(caught.value) and unavailable(caught.value)
        finally:
            engine.dispose()


def test_a_bad_statement_timeout_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_STATEMENT_TIMEOUT_MS", "30s")
    with pytest.raises(ValueError, match="ASSAY_STATEMENT_TIMEOUT_MS must be a whole number"):
        create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", tmp_path))


def test_secrets_stay_out_of_every_requests_environ(tmp_path):
    """granian builds each request's environ on a copy of the worker's process environment:
    the secrets must not be in it (an error reporter that dumps the environ would leak
    them), and the app, having read them, must still work."""
    env = local_env(f"sqlite:///{tmp_path / 'assay.db'}", tmp_path / "instance", workers=1,
                    REDIS_URL="redis://127.0.0.1:1/0")
    assert set(SECRET_VARIABLES) <= set(env)
    serve = ("from granian import Granian; from server.serve import settings; "
             "Granian(**{**settings(), 'target': 'tests.server.environ_probe:app'}).serve()")

    def listening(log: str) -> str | None:
        return found.group(1) if (found := LISTENING.search(log)) else None

    with running_process([sys.executable, "-c", serve], env, tmp_path / "server.log",
                         listening) as (base, process):
        wait_until_answers(f"{base}/environ-probe", process)
        assert requests.get(f"{base}/environ-probe", timeout=10).json() == []
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200  # has its DB
