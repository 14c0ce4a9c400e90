"""The worker POSTs its alerts, signed, to an operator webhook (a real HTTP server on loopback)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest

from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.broker import free_port
from stream.demo import WorkerProcess
from stream.kafka import ensure_topics
from stream.producer import produce, synthetic_events
from tests.integration.test_keys_live import _wait_applied
from tests.integration.test_webhooks import SECRET, Receiver
from tests.integration.test_worker_e2e import _settings

pytestmark = pytest.mark.integration


def test_worker_alerts_reach_the_webhook(broker, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    rx = Receiver(port)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(rx.start(), loop).result(10)
    tag = f"w{uuid.uuid4().hex[:8]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    hooks = f"ops=http://127.0.0.1:{port}/hook|{SECRET.decode()}"
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path,
                           env=env | {"LEPTON_KEYS": KeyRing.generate("k").serialise().strip(),
                                      "LEPTON_WEBHOOKS": hooks, "LEPTON_ALERT_RATE": "0.01"})
    try:
        worker.wait_ready()
        items = synthetic_events(SyntheticConfig(events=4000, seed=9))
        produce(s, broker.bootstrap, items, rate=3000, progress=False)
        m = _wait_applied(worker, len(items))
        deadline = time.monotonic() + 15
        while len(rx.accepted) < m.get("lepton_alerts_total", 0) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()
        asyncio.run_coroutine_threadsafe(rx.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    assert m["lepton_alerts_total"] > 0
    assert len(rx.accepted) == m["lepton_alerts_total"]  # every alert delivered once, signature verified
    assert all(a["kind"] == "edge_anomaly" and "components" in a for a in rx.accepted.values())
