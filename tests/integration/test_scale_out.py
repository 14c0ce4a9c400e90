"""Scale-out: two workers in one group publish, together, exactly what one worker publishes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.demo import WorkerProcess
from stream.kafka import ensure_topics
from stream.producer import produce, synthetic_events
from stream.subscriber import open_record
from tests.integration.test_recovery import _wait_drained
from tests.integration.test_worker_e2e import _drain, _settings

pytestmark = pytest.mark.integration

WAVES, WAVE = 6, 400


def _owned(w: WorkerProcess) -> float:
    return w.metrics().get("lepton_owned_partitions", -1)


def test_two_workers_union_equals_one(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"scale{uuid.uuid4().hex[:6]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    ring = KeyRing.generate("scale")
    common = {"LEPTON_KEYS": ring.serialise().strip(), "LEPTON_REFIT_EVERY": "300",  # refits: installed at fixed batches
              "LEPTON_BATCH_WINDOW": "1.2", "LEPTON_MAX_BATCH": str(2 * WAVE), "LEPTON_BATCH_MODE": "fixed"}
    solo_topic = f"{tag}.solo.predictions"
    solo_s = s.model_copy(update={"topic_predictions": solo_topic, "app_id": f"{tag}-solo"})
    ensure_topics(solo_s, broker.bootstrap)
    workers = [WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path / name, env=env | common)
               for name in ("a", "b")]
    solo = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path / "solo",
                         env=env | common | {"LEPTON_APP_ID": f"{tag}-solo", "LEPTON_TOPIC_PREDICTIONS": solo_topic})
    everyone = [*workers, solo]
    try:
        for w in everyone:
            w.wait_ready()
        deadline = time.monotonic() + 40
        while ([_owned(w) for w in workers] != [2, 2] or _owned(solo) != 4) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert [_owned(w) for w in workers] == [2, 2] and _owned(solo) == 4
        items = synthetic_events(SyntheticConfig(events=WAVES * WAVE + 200, seed=4))[:WAVES * WAVE]
        for i in range(WAVES):  # waves: every worker cuts the same batches
            produce(s, broker.bootstrap, items[i * WAVE:(i + 1) * WAVE], progress=False)
            time.sleep(2.0)
        for w in everyone:
            _wait_drained(w)
        counts = [w.metrics()["lepton_predictions_total"] for w in everyone]
        batches = [w.metrics()["lepton_batches_total"] for w in everyone]
    finally:
        for w in everyone:
            w.stop()
    assert batches == [WAVES] * 3, batches

    def published(topic: str, expect: float) -> list[dict]:
        out = [open_record(ring, topic, m.key, m.value) for m in _drain(s, broker.bootstrap, topic, int(expect))]
        return [{k: p[k] for k in ("id", "node", "batch", "offsets", "predictions", "model_version")} for p in out]

    pair = published(s.topic_predictions, counts[0] + counts[1])
    one = published(solo_topic, counts[2])
    assert 0 < counts[0] and 0 < counts[1] and counts[0] + counts[1] == counts[2] == len(one)
    # fits are handed out at batches 3, 4 and 5 (300 positives: under a wave) and installed, in every
    # worker, when the next is due: before batches 4, 5 and 6
    assert {p["model_version"] for p in one} == {"sage-0/untrained", "sage-0/lr-1", "sage-0/lr-2", "sage-0/lr-3"}
    a, b = {p["id"]: p for p in pair}, {p["id"]: p for p in one}
    assert a.keys() == b.keys()
    diff = [(a[k], b[k]) for k in a if not _same(a[k], b[k])]
    assert not diff, (len(diff), diff[0])


def _same(x: dict, y: dict) -> bool:
    """Equal records. On a GPU (the workers' default device where one exists) CUDA's atomic
    adds sum in no fixed order, so probabilities may differ in their last digits and near-ties
    swap: there the ranked probabilities are compared to 1e-5 instead of bit for bit."""
    if not torch.cuda.is_available():
        return x == y
    meta = ("id", "node", "batch", "offsets", "model_version")
    px, py = ([q["p"] for q in r["predictions"]] for r in (x, y))
    return all(x[k] == y[k] for k in meta) and len(px) == len(py) and np.allclose(px, py, atol=1e-5)
