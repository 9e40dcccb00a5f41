"""gunicorn with deploy/gunicorn.conf.py as a child process, for tests and benchmarks."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.config import ROOT

CONF = ROOT / "deploy" / "gunicorn.conf.py"
_LISTENING = re.compile(r"Listening at: (http://[\d.]+:\d+)")


@contextmanager
def running_gunicorn(env: dict[str, str], log_path: Path, timeout: float = 60, *,
                     command: list[str] | None = None, cwd: Path = ROOT,
                     ready: str = "assay app ready in worker") -> Iterator[str]:
    """Start ``server.wsgi:app`` (or ``command``, another gunicorn app); yield its base URL
    once every worker has logged ``ready``.

    ``env`` is the whole environment of the child (bind with ASSAY_BIND=127.0.0.1:0 for a free
    port); its output goes to ``log_path``. The server is stopped on exit.
    """
    command = command or [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--log-level",
                          "info", "server.wsgi:app"]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                text = log_path.read_text()
                found = _LISTENING.search(text)
                booted = text.count("Booting worker")
                if found and booted and text.count(ready) >= booted:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"gunicorn exited ({proc.returncode}):\n{text}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn not ready after {timeout} s:\n{text}")
                time.sleep(0.1)
            yield found.group(1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
