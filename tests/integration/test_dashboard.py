"""The /ui dashboard rendered by a real headless Chromium shows the worker's live numbers."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.demo import WorkerProcess
from stream.kafka import ensure_topics
from stream.producer import produce, synthetic_events
from tests.integration.test_recovery import _wait_drained
from tests.integration.test_worker_e2e import _settings

pytestmark = pytest.mark.integration
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _render(url: str, tmp: Path) -> str:
    """The DOM after the page's scripts ran (headless Chromium, virtual time)."""
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'chromium'}",
                        "--virtual-time-budget=4000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it where apt exists)")
def test_dashboard_shows_live_numbers(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"ui{uuid.uuid4().hex[:6]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path,
                           env=env | {"LEPTON_KEYS": KeyRing.generate("ui").serialise().strip()})
    try:
        worker.wait_ready()
        items = synthetic_events(SyntheticConfig(events=3000, seed=8))
        produce(s, broker.bootstrap, items, inject_malformed=7, progress=False)
        _wait_drained(worker)
        status = json.loads(worker.get("/api/status")[1])
        metrics = worker.get("/metrics")[1]
        dom = _render(f"http://127.0.0.1:{worker.web_port}/ui", tmp_path)
    finally:
        worker.stop()
    assert 'data-loaded="1"' in dom, dom[:2000]
    for family in ("events_total", "batch_records_bucket", "batch_latency_seconds_bucket",
                   "event_latency_seconds_bucket", "consumer_lag", "graph_nodes", "graph_edges", "rows_reembedded_total",
                   "model_info", "predictions_total", "alerts_total", "arrival_rate", "batch_target_records",
                   "owned_partitions"):
        assert f"\nlepton_{family}" in metrics, family
    assert 'lepton_events_total{outcome="deadlettered"} 7' in metrics
    shown = {k: html.unescape(v).strip() for k, v in re.findall(r'data-k="([^"]+)"[^>]*>([^<]*)<', dom)}
    assert shown["graph.edges"] == f"{status['graph']['edges']:,}" and status["graph"]["edges"] > 1000
    assert shown["graph.nodes"] == f"{status['graph']['nodes']:,}"
    assert shown["totals.applied"] == f"{len(items):,}"
    assert shown["deadlettered"] == "7"
    assert shown["lag.total"] == "0" and shown["ready_text"] == "ready"
    assert shown["model_version"] == status["model_version"]
    assert shown["owned_partitions"] == "0,1,2,3"
    assert dom.count("<tr>") >= 3 and "hidden" in dom  # prediction rows, partners not shown
    assert not any(p.get("top") or p.get("node") for p in status["predictions"])  # metadata only
