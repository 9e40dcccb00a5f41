"""Two app instances behind a reverse proxy (nginx from Debian), sharing PostgreSQL: the
proxy alternates participants' requests between them, one instance is killed mid-run, and
every participant still finishes with each trial stored exactly once."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.server_process import free_port, wait_until_answers
from tests.conftest import fresh_database
from tests.server.test_concurrency import _launch, app_server
from tests.server.test_faults import check_everything_stored, in_background, wait_until_stored

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream assay {{
        server 127.0.0.1:{a} max_fails=1 fail_timeout=30s;
        server 127.0.0.1:{b} max_fails=1 fail_timeout=30s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://assay;
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_next_upstream error timeout http_502 non_idempotent;
        }}
    }}
}}
"""


@contextmanager
def nginx(tmp: Path, a: int, b: int) -> Iterator[str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        if os.environ.get("CI"):
            raise RuntimeError("nginx not found: .ci/run installs it")
        pytest.skip("nginx not found (apt-get install nginx)")
    tmp.mkdir()
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # the workers read the temp folders
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(user=user, tmp=tmp, a=a, b=b, port=port))
    process = subprocess.Popen([binary, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_answers(base + "/healthz", process, timeout=30)
        except RuntimeError as exc:
            errors = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
            raise RuntimeError(f"nginx did not start: {errors}") from exc
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def trial_posts(log: str) -> int:
    return log.count("POST /api/trials")


@pytest.fixture
def url(tmp_path) -> Iterator[str]:
    yield from fresh_database("postgres", tmp_path)


def test_two_instances_behind_nginx_survive_losing_one(url, tmp_path, stimulus_dir):
    slug = _launch(url, tmp_path, stimulus_dir)
    key = secrets.token_hex(32)  # shared: a token signed by one instance is good on the other
    shared = {"ASSAY_SECRET_KEY": key, "ASSAY_TRUSTED_PROXIES": "1"}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with app_server(url, tmp_path / "a", workers=1, **shared) as first, \
            app_server(url, tmp_path / "b", workers=1, **shared) as second, \
            nginx(tmp_path / "nginx", port_of(first.base_url), port_of(second.base_url)) as base:
        thread, results = in_background(base, slug)
        wait_until_stored(url, slug, 16)
        served_by_first = trial_posts(first.log_text())
        assert served_by_first > 0 and trial_posts(second.log_text()) > 0, "alternating"
        first.kill()  # the server and its workers, at once
        thread.join(timeout=240)
        assert trial_posts(first.log_text()) <= served_by_first + 4  # it is gone
        second_log = second.log_text()
    check_everything_stored(results, url, slug)
    assert trial_posts(second_log) > 0
