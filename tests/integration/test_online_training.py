"""Online training on the live stream: the model is hot-swapped, outputs carry the new version,
and nothing is dropped during the swap."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.demo import WorkerProcess
from stream.kafka import ensure_topics
from stream.producer import produce, synthetic_events
from stream.subscriber import Opener
from tests.integration.test_keys_live import _read_all, _wait_applied
from tests.integration.test_worker_e2e import _settings

pytestmark = pytest.mark.integration


def test_hot_swap_changes_version_and_drops_nothing(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"o{uuid.uuid4().hex[:8]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    ring = KeyRing.generate("k")
    items = synthetic_events(SyntheticConfig(events=3000, seed=8))
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path,
                           env=env | {"LEPTON_KEYS": ring.serialise().strip(), "LEPTON_REFIT_EVERY": "600"})
    try:
        worker.wait_ready()
        half = len(items) // 2
        produce(s, broker.bootstrap, items[:half], progress=False)
        _wait_applied(worker, half)
        time.sleep(1.0)  # the background fit finishes while the stream idles
        produce(s, broker.bootstrap, items[half:], rate=1500, progress=False)
        m = _wait_applied(worker, len(items))
    finally:
        worker.stop()
    assert m.get("lepton_model_swaps_total", 0) >= 1
    assert m['lepton_events_total{outcome="applied"}'] == len(items)
    total = int(m["lepton_predictions_total"])
    got, stats = _read_all(s, broker.bootstrap, Opener(keyring=ring), total)
    assert len(got) == total and not stats.failed
    versions = {g["model_version"] for g in got}
    assert any(v.endswith("/untrained") for v in versions) and any("/lr-" in v for v in versions)
