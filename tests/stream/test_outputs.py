"""Output records: compact UTF-8 JSON in the documented schema, the same values as the stdlib writes."""

from __future__ import annotations

import json

from gnn.processor import Prediction
from stream.outputs import deadletter_record, prediction_record


def test_a_prediction_record_is_compact_json_in_the_documented_schema() -> None:
    pred = Prediction(node="nœud-1", partners=[("n7", 0.93), ("n8", 1e-07)], trigger_ts_ms=1700000000120)
    raw = prediction_record(pred, pid="9f2c", model_version="sage-0/lr-3", batch="a41c09e2d7b3f1e0",
                            offsets={"lepton.edges:2": [118, 131]}, now=1700000000.25)
    assert b" " not in raw and "nœud-1".encode() in raw  # compact; non-ASCII kept as UTF-8
    obj = json.loads(raw)
    assert list(obj) == ["schema", "type", "id", "node", "model_version", "batch", "offsets", "generated_at",
                         "trigger_produced_ms", "predictions"]
    assert obj["predictions"] == [{"node": "n7", "p": 0.93}, {"node": "n8", "p": 1e-07}]
    assert obj == json.loads(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def test_a_dead_letter_keeps_the_original_bytes() -> None:
    raw = deadletter_record(reason="bad_json", detail="x", topic="lepton.edges", partition=0, offset=41,
                            original=b"\xff{", now=1.5)
    assert json.loads(raw) == {"reason": "bad_json", "detail": "x", "topic": "lepton.edges", "partition": 0,
                               "offset": 41, "original_b64": "/3s=", "ts": 1.5}
