"""``lepton demo``: broker + worker + synthetic producer + decrypting subscriber, end to end.

Starts the embedded broker, a real ``lepton run`` worker process, publishes a synthetic
stream with a few malformed events, reads every output topic back (decrypting predictions
and alerts with the demo's ephemeral key), and prints / writes a summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.broker import EmbeddedBroker, free_port
from stream.children import die_with_parent
from stream.kafka import ensure_topics
from stream.metrics import parse_prometheus
from stream.producer import produce, synthetic_events
from stream.settings import Settings
from stream.subscriber import Opener, SubscribeStats, subscribe

__all__ = ["run_demo", "WorkerProcess"]


class WorkerProcess:
    """A ``lepton run`` child process bound to a broker, with its web port for metrics."""

    def __init__(self, *, bootstrap: str, state_dir: Path, env: dict[str, str] | None = None,
                 web_port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.web_port = web_port or free_port()
        self.log_path = state_dir / "logs" / f"worker-{self.web_port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        child_env = dict(os.environ, **(env or {}), LEPTON_BOOTSTRAP=bootstrap, LEPTON_STATE_DIR=str(state_dir),
                         LEPTON_WEB_PORT=str(self.web_port), PYTHONUNBUFFERED="1")
        self.started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "run", *(extra_args or [])],
                                         env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from launch until ``/readyz`` answers 200; raises if the worker dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_path.read_text()[-3000:])
            if self.get("/readyz")[0] == 200:
                return time.monotonic() - self.started
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s; log: {self.log_path}")

    def metrics(self, timeout: float = 2.0) -> dict[str, float]:
        status, text = self.get("/metrics", timeout=timeout)
        return parse_prometheus(text) if status == 200 else {}

    def kill(self) -> int:
        """SIGKILL the worker (crash tests): no shutdown code runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)


def run_demo(settings: Settings, *, events: int = 6000, rate: float | None = 1500.0, malformed: int = 10,
             seed: int = 0, summary_json: Path | None = None, timeout: float = 120.0,
             console: Console | None = None) -> dict[str, Any]:
    """Run the whole flow once and return the summary (also printed, and written as JSON if asked)."""
    con = console or Console()
    state = settings.state_dir / "demo"
    for stale in (state.iterdir() if state.exists() else []):  # the broker is new: earlier state is not its
        if stale.name != "logs":
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    state.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    with EmbeddedBroker(log_dir=state / "logs") as broker:
        con.print(f"[bold]embedded broker[/] (Tansu) at {broker.bootstrap}")
        ensure_topics(settings, broker.bootstrap)
        ring = KeyRing.generate("demo-" + os.urandom(3).hex())
        con.print(f"[yellow]demo: generated an ephemeral AES-256 key {ring.active!r}[/] (memory only, handed to "
                  "the worker through its environment; use `lepton keys generate` for real deployments)")
        worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=state,
                               env={"LEPTON_KEYS": ring.serialise().strip().replace("\n", ","),
                                    # alert at the rate anomalies are planted, unless the user chose one
                                    "LEPTON_ALERT_RATE": os.environ.get("LEPTON_ALERT_RATE",
                                                                        str(SyntheticConfig().anomaly_rate))})
        try:
            startup = worker.wait_ready()
            con.print(f"worker ready in {startup:.1f}s (log: {worker.log_path})")
            summary = _drive(settings, broker.bootstrap, ring, worker, con, events=events, rate=rate,
                             malformed=malformed, seed=seed, timeout=timeout)
            summary["startup_s"] = round(startup, 2)
        finally:
            worker.stop()
    summary["wall_s"] = round(time.monotonic() - t_start, 2)
    _print(con, summary)
    if summary_json is not None:
        Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
        con.print(f"summary written to {summary_json}")
    return summary


def _drive(settings: Settings, bootstrap: str, ring: KeyRing, worker: WorkerProcess, con: Console, *,
           events: int, rate: float | None, malformed: int, seed: int, timeout: float) -> dict[str, Any]:
    s = settings
    items = synthetic_events(SyntheticConfig(events=events, seed=seed))
    total = len(items) + malformed
    seen: Counter = Counter()
    reasons: Counter = Counter()
    done = threading.Event()

    def on_record(topic: str, obj: dict[str, Any]) -> None:
        seen[topic] += 1
        if topic == s.topic_deadletter:
            reasons[obj.get("reason", "?")] += 1

    holder: dict[str, SubscribeStats] = {}
    topics = [s.topic_predictions, s.topic_alerts, s.topic_deadletter]
    sub = threading.Thread(target=lambda: holder.setdefault("stats", subscribe(
        s, bootstrap, Opener(keyring=ring), topics=topics, on_record=on_record, stop=lambda _: done.is_set())),
        daemon=True)
    sub.start()
    t0 = time.monotonic()
    produce(s, bootstrap, items, rate=rate, inject_malformed=malformed, seed=seed)
    accounted = 0.0
    m: dict[str, float] = {}
    with Progress(TextColumn("[bold]process"), BarColumn(), MofNCompleteColumn(), console=con) as bar:
        task = bar.add_task("process", total=total)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = worker.metrics()
            accounted = sum(v for k, v in m.items() if k.startswith("lepton_events_total"))
            bar.update(task, completed=accounted)
            if accounted >= total and seen[s.topic_predictions] >= m.get("lepton_predictions_total", 0) \
                    and seen[s.topic_deadletter] >= malformed:
                break
            time.sleep(0.2)
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    done.set()
    sub.join(timeout=10)
    stats = holder.get("stats", SubscribeStats())
    lat = np.array(stats.latencies_ms or [np.nan])
    return {
        "events_in": total,
        "applied": int(m.get('lepton_events_total{outcome="applied"}', 0)),
        "duplicates": int(m.get('lepton_events_total{outcome="duplicate"}', 0)),
        "deadlettered": seen[s.topic_deadletter],
        "deadletter_reasons": dict(reasons),
        "malformed_injected": malformed,
        "predictions_out": seen[s.topic_predictions],
        "alerts_out": seen[s.topic_alerts],
        "decrypted_ok": stats.opened[s.topic_predictions],
        "decrypt_failed": dict(stats.failed),
        "graph_nodes": int(m.get("lepton_graph_nodes", 0)),
        "graph_edges": int(m.get("lepton_graph_edges", 0)),
        "throughput_eps": round(total / elapsed, 1),
        "latency_ms_p50": round(float(np.nanpercentile(lat, 50)), 1),
        "latency_ms_p99": round(float(np.nanpercentile(lat, 99)), 1),
        "process_s": round(elapsed, 2),
        "stage_seconds": {k.split('"')[1]: round(v, 3) for k, v in m.items()
                          if k.startswith("lepton_stage_seconds_total")},
    }


def _print(con: Console, summary: dict[str, Any]) -> None:
    table = Table(title="lepton demo summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
    con.print(table)
