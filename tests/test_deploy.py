"""Deployment files, checked statically (no Docker engine here) plus the webhook receiver for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from security.signing import signature_headers
from stream.broker import free_port
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = [name for name in SERVICES if name.startswith("worker-")]


def _env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_stack_has_what_production_needs() -> None:
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "KAFKA_PROCESS_ROLES" in _env(SERVICES["kafka"])  # KRaft, no ZooKeeper
    assert len(WORKERS) == 2 and {"kafka-init", "prometheus", "webhook"} <= set(SERVICES)
    for w in WORKERS:
        assert SERVICES[w]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_referenced_files_exist_and_secrets_stay_out() -> None:
    for name, svc in SERVICES.items():
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), (name, src)
        env_file = svc.get("env_file")
        if env_file:
            assert env_file.startswith("./secrets/") and "secrets/" in (ROOT / ".gitignore").read_text()
    assert (ROOT / "docker" / "Dockerfile.gpu").is_file()
    assert "data.dgl.ai/wheels" in (ROOT / "docker" / "Dockerfile.gpu").read_text()


def test_every_setting_name_is_real_and_valid() -> None:
    fields = set(Settings.model_fields)
    dockerfiles = [(ROOT / "docker" / f).read_text() for f in ("Dockerfile", "Dockerfile.gpu")]
    named = set(re.findall(r"LEPTON_([A-Z_]+)", "\n".join(dockerfiles)))
    for w in WORKERS:
        env = _env(SERVICES[w])
        named |= {k.removeprefix("LEPTON_") for k in env if k.startswith("LEPTON_")}
        Settings(**{k.removeprefix("LEPTON_").lower(): v for k, v in env.items()})  # values validate
    assert {n.lower() for n in named} <= fields, {n for n in named if n.lower() not in fields}


def test_ports_and_topics_agree_with_the_settings() -> None:
    env = _env(SERVICES[WORKERS[0]])
    s = Settings(**{k.removeprefix("LEPTON_").lower(): v for k, v in env.items()})
    host_ports = set()
    for w in WORKERS:
        host, container = SERVICES[w]["ports"][0].split(":")
        assert int(container) == s.web_port
        host_ports.add(host)
    assert len(host_ports) == len(WORKERS)
    prom = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{w}:{s.web_port}" for w in WORKERS)
    assert prom["scrape_configs"][0]["metrics_path"] == "/metrics"
    topics = {spec.split(":")[0]: int(spec.split(":")[1]) for spec in _env(SERVICES["kafka-init"])["TOPICS"].split()}
    assert topics == s.topics()
    assert f"EXPOSE {s.web_port}" in (ROOT / "docker" / "Dockerfile").read_text()


@pytest.mark.integration
def test_webhook_receiver_verifies_and_deduplicates() -> None:
    port = free_port()
    env = dict(os.environ, LEPTON_WEBHOOKS=f"ops=http://127.0.0.1:{port}/alerts|s3cret", WEBHOOK_PORT=str(port),
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "docker" / "webhook_receiver.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = json.dumps({"id": "a1", "kind": "edge_anomaly"}).encode()

        def post(headers: dict[str, str]) -> tuple[int, dict]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", data=body, method="POST",
                                         headers={"X-Lepton-Idempotency-Key": "a1", **headers})
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as err:
                return err.code, {}

        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = post({})
                break
            except OSError:
                assert time.monotonic() < deadline, "receiver did not start"
                time.sleep(0.2)
        assert status == 401  # unsigned
        assert post(signature_headers(b"wrong", body))[0] == 401
        assert post(signature_headers(b"s3cret", body)) == (200, {"ok": True, "duplicate": False})
        assert post(signature_headers(b"s3cret", body)) == (200, {"ok": True, "duplicate": True})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
