"""Publish edge events to ``lepton.edges``: from an edge file or the synthetic generator, at a rate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gnn.io import read_edges
from gnn.synthetic import SyntheticConfig, generate
from stream.kafka import kafka_python_config
from stream.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["produce", "file_events", "table_events", "synthetic_events", "edge_key", "MALFORMED", "ProduceStats"]

# Malformed events the demo injects on purpose: each exercises one dead-letter reason.
MALFORMED: list[tuple[str, bytes]] = [
    ("not_json", b"{this is not json"),
    ("not_utf8", b"\xff\xfe\x00garbage"),
    ("not_object", b"[1, 2, 3]"),
    ("missing_field", b'{"src": "a"}'),
    ("bad_id", b'{"src": {"x": 1}, "dst": "b"}'),
    ("id_too_long", json.dumps({"src": "x" * 300, "dst": "b"}).encode()),
    ("bad_weight", b'{"src": "a", "dst": "b", "weight": NaN}'),
    ("bad_op", b'{"src": "a", "dst": "b", "op": "upsert"}'),
    ("bad_ts", b'{"src": "a", "dst": "b", "ts": -5}'),
    ("unknown_field", b'{"src": "a", "dst": "b", "wieght": 2}'),
]


@dataclass
class ProduceStats:
    sent: int = 0
    malformed: int = 0
    seconds: float = 0.0


def edge_key(src: object, dst: object) -> bytes:
    """Kafka key of an edge event: the unordered pair, so every event of one edge (either
    direction) lands in one partition and keeps its order (add/remove do not commute)."""
    a, b = sorted((str(src), str(dst)))
    return f"{a}|{b}".encode()


def synthetic_events(config: SyntheticConfig) -> list[tuple[bytes | None, bytes]]:
    """(key, value) pairs of the synthetic stream."""
    return [(edge_key(e.value["src"], e.value["dst"]), json.dumps(e.value, separators=(",", ":")).encode())
            for e in generate(config)]


def file_events(path: str | Path, *, limit: int | None = None) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) pairs from an edge file, in time order."""
    return table_events(read_edges(path, limit=limit))


def table_events(df: "pd.DataFrame") -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) pairs of the rows of an edge table (:func:`gnn.io.read_edges`' columns)."""
    src, dst, ts, w, op = (df[c].to_numpy() for c in ("src", "dst", "ts", "weight", "op"))
    for i in range(len(df)):
        event = {"src": _plain(src[i]), "dst": _plain(dst[i]), "ts": float(ts[i])}
        if w[i] != 1.0:
            event["weight"] = float(w[i])
        if op[i] != "add":
            event["op"] = str(op[i])
        yield edge_key(event["src"], event["dst"]), json.dumps(event, separators=(",", ":")).encode()


def produce(settings: Settings, bootstrap: str, events: Iterable[tuple[bytes | None, bytes]], *,
            rate: float | None = None, total: int | None = None, inject_malformed: int = 0,
            progress: bool = True, seed: int = 0) -> ProduceStats:
    """Send ``events`` to the edges topic at ``rate`` events/s (None = as fast as possible).

    ``inject_malformed`` bad events (cycling through :data:`MALFORMED`) are placed at
    deterministic random positions so the dead-letter path is exercised.
    """
    from kafka import KafkaProducer  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    items = list(events)
    rng = np.random.default_rng(seed)
    for j, pos in enumerate(sorted(rng.integers(0, len(items) + 1, inject_malformed).tolist(), reverse=True)):
        items.insert(pos, (b"bad", MALFORMED[j % len(MALFORMED)][1]))
    producer = KafkaProducer(**kafka_python_config(settings, bootstrap), acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1, retries=5)
    stats = ProduceStats(malformed=inject_malformed)
    start = time.perf_counter()
    with Progress(TextColumn("[bold]produce"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress, transient=False) as bar:
        task = bar.add_task("produce", total=len(items))
        for i, (key, value) in enumerate(items):
            if rate:
                lag = start + i / rate - time.perf_counter()
                if lag > 0:
                    time.sleep(lag)
            producer.send(settings.topic_edges, key=key, value=value)
            stats.sent += 1
            if i % 200 == 0:
                bar.update(task, completed=i + 1)
        producer.flush()
        bar.update(task, completed=len(items))
    producer.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _plain(v: object) -> object:
    return int(v) if isinstance(v, (np.integer,)) else (v.item() if hasattr(v, "item") else v)
