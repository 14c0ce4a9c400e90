"""``lepton``: the command line. Every command has ``--help``; flags override ``LEPTON_*`` settings."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer
from rich.console import Console

from stream.settings import Settings, load_settings

__all__ = ["main", "app"]

app = typer.Typer(help="lepton-stream: streaming graph analytics over Kafka.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
eval_app = typer.Typer(help="Evaluations that print (and write) JSON.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print (and write) JSON.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage the AES-256 key ring used to seal predictions and alerts.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")
state_app = typer.Typer(help="Inspect the worker's recovery state (snapshots).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(state_app, name="state")
console = Console(stderr=True)


def _default(name: str) -> Any:
    """A setting's default (``LEPTON_<NAME>``), for options that mirror it: one place to change it."""
    return Settings.model_fields[name].default


def _settings(**flags: object) -> Settings:
    try:
        return load_settings(**flags)
    except Exception as exc:  # pydantic ValidationError: show it plainly
        console.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def run(bootstrap: Optional[str] = typer.Option(None, help="Kafka bootstrap servers (default: embedded broker)"),
        max_batch: Optional[int] = typer.Option(None, help="largest micro-batch"),
        batch_window: Optional[float] = typer.Option(None, help="seconds to wait for a batch to fill"),
        device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
        backend: Optional[str] = typer.Option(None, help="kernel backend: auto | dgl | torch"),
        top_k: Optional[int] = typer.Option(None, help="predictions per touched node"),
        web_port: Optional[int] = typer.Option(None, help="port of /metrics, /healthz, /readyz"),
        model: Optional[Path] = typer.Option(None, help="checkpoint from `lepton train` to start from"),
        state_dir: Optional[Path] = typer.Option(None, help="state directory (logs, keys)"),
        log_level: Optional[str] = typer.Option(None, help="debug | info | warn | error")) -> None:
    """Run the worker: consume lepton.edges, publish predictions, alerts and dead letters."""
    from stream.worker import run_worker  # noqa: PLC0415

    run_worker(_settings(bootstrap=bootstrap, max_batch=max_batch, batch_window=batch_window, device=device,
                         backend=backend, top_k=top_k, web_port=web_port, state_dir=state_dir, log_level=log_level,
                         model=model))


@app.command()
def demo(events: int = typer.Option(6000, help="synthetic events to publish"),
         rate: float = typer.Option(1500.0, help="offered rate, events/s (0 = unthrottled)"),
         malformed: int = typer.Option(10, help="malformed events injected on purpose"),
         seed: int = typer.Option(0, help="seed of the synthetic stream"),
         summary_json: Optional[Path] = typer.Option(None, help="write the summary here as JSON"),
         state_dir: Optional[Path] = typer.Option(None, help="state directory")) -> None:
    """Embedded broker + worker + synthetic producer + decrypting subscriber, with a summary."""
    from stream.demo import run_demo  # noqa: PLC0415

    s = _settings(state_dir=state_dir)
    summary = run_demo(s, events=events, rate=rate or None, malformed=malformed, seed=seed,
                       summary_json=summary_json, console=Console())
    ok = (summary["predictions_out"] > 0 and summary["alerts_out"] > 0
          and summary["decrypted_ok"] == summary["predictions_out"] and summary["deadlettered"] == malformed)
    if not ok:
        console.print("[red]demo finished but the summary is not what it should be (see above)[/]")
        raise typer.Exit(1)


@app.command()
def broker(port: Optional[int] = typer.Option(None, help="TCP port (default: a free one)"),
           state_dir: Optional[Path] = typer.Option(None, help="where the broker log goes")) -> None:
    """Run the embedded Tansu broker standalone and print its bootstrap address."""
    from stream.broker import EmbeddedBroker  # noqa: PLC0415

    s = _settings(state_dir=state_dir)
    for sig in (signal.SIGINT, signal.SIGTERM):  # explicit: a shell's background job starts with SIGINT ignored
        signal.signal(sig, signal.default_int_handler)
    b = EmbeddedBroker(port=port, log_dir=s.state_dir / "logs").start()
    try:  # from here on, Ctrl-C (or SIGTERM) at any point stops the broker
        print(b.bootstrap, flush=True)
        console.print(f"embedded broker running at {b.bootstrap} (log: {b.log_path}); Ctrl-C to stop")
        while b.process is not None and b.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


@app.command()
def produce(path: Optional[Path] = typer.Argument(None, help="edge file: SNAP, CSV, JSON lines or Parquet"),
            synthetic: int = typer.Option(0, help="publish N synthetic events instead of a file"),
            rate: float = typer.Option(0.0, help="events/s (0 = as fast as possible)"),
            limit: Optional[int] = typer.Option(None, help="at most this many rows of the file"),
            malformed: int = typer.Option(0, help="inject this many malformed events"),
            seed: int = typer.Option(0),
            bootstrap: Optional[str] = typer.Option(None, help="Kafka bootstrap servers")) -> None:
    """Replay an edge file (or the synthetic generator) into lepton.edges at a given rate."""
    from gnn.synthetic import SyntheticConfig  # noqa: PLC0415
    from stream.kafka import ensure_topics  # noqa: PLC0415
    from stream.producer import file_events, produce as do_produce, synthetic_events  # noqa: PLC0415

    s = _settings(bootstrap=bootstrap)
    if s.bootstrap is None:
        console.print("[red]set --bootstrap or LEPTON_BOOTSTRAP (see `lepton broker`)[/]")
        raise typer.Exit(2)
    if (path is None) == (synthetic == 0):
        console.print("[red]give exactly one of PATH or --synthetic N[/]")
        raise typer.Exit(2)
    ensure_topics(s, s.bootstrap)
    items = synthetic_events(SyntheticConfig(events=synthetic, seed=seed)) if synthetic \
        else file_events(path, limit=limit)  # type: ignore[arg-type]
    stats = do_produce(s, s.bootstrap, items, rate=rate or None, inject_malformed=malformed, seed=seed)
    console.print(f"sent {stats.sent} events in {stats.seconds:.2f}s ({stats.sent / max(stats.seconds, 1e-9):.0f}/s)")


@app.command()
def subscribe(topic: str = typer.Option("predictions", help="predictions | alerts | deadletter | all"),
              decrypt: bool = typer.Option(True, help="open envelopes with LEPTON_KEYS / the key file"),
              max_records: int = typer.Option(0, help="stop after this many records (0 = never)"),
              idle_timeout: Optional[float] = typer.Option(None, help="stop after this many idle seconds"),
              rid: Optional[str] = typer.Option(None, help="recipient id, for per-subscriber envelopes"),
              private_key: Optional[Path] = typer.Option(None, help="X25519 private key file (mode 600)"),
              bootstrap: Optional[str] = typer.Option(None)) -> None:
    """Print decrypted predictions / alerts (or dead letters) as JSON lines; bad records are counted."""
    from security.keys import KeyRing  # noqa: PLC0415
    from security.recipients import load_private  # noqa: PLC0415
    from stream.subscriber import Opener, subscribe as do_subscribe  # noqa: PLC0415

    s = _settings(bootstrap=bootstrap)
    if s.bootstrap is None:
        console.print("[red]set --bootstrap or LEPTON_BOOTSTRAP[/]")
        raise typer.Exit(2)
    names = {"predictions": s.topic_predictions, "alerts": s.topic_alerts, "deadletter": s.topic_deadletter}
    topics = list(names.values()) if topic == "all" else [names[topic]]
    opener = None
    if decrypt:
        def load() -> KeyRing:
            return KeyRing.from_env(s.keys.get_secret_value() if s.keys else None,
                                    file=s.key_file or s.state_dir / "keys")
        opener = Opener(keyring=None if private_key else load(), rid=rid,
                        private_key=load_private(private_key) if private_key else None,
                        reload=None if private_key else load)
    count = [0]

    def emit(t: str, obj: dict) -> None:
        count[0] += 1
        sys.stdout.write(json.dumps({"topic": t, **obj}) + "\n")
        sys.stdout.flush()

    stats = do_subscribe(s, s.bootstrap, opener, topics=topics, on_record=emit, idle_timeout=idle_timeout,
                         stop=lambda _: bool(max_records) and count[0] >= max_records)
    console.print(f"received {dict(stats.received)}; opened {dict(stats.opened)}; skipped {dict(stats.failed)}")


@keys_app.command("generate")
def keys_generate(file: Path = typer.Option(Path(".lepton/keys"), help="key file to create (mode 600)"),
                  kid: Optional[str] = typer.Option(None, help="key id (default: random)"),
                  force: bool = typer.Option(False, help="overwrite an existing file")) -> None:
    """Create a key file with one fresh AES-256 key."""
    from security.keys import KeyRing  # noqa: PLC0415

    if file.exists() and not force:
        console.print(f"[red]{file} exists; use `lepton keys rotate` or --force[/]")
        raise typer.Exit(2)
    file.parent.mkdir(parents=True, exist_ok=True)
    ring = KeyRing.generate(kid)
    ring.write(file)
    console.print(f"wrote {file} (mode 600) with active key id {ring.active!r}")


@keys_app.command("x25519")
def keys_x25519(private: Path = typer.Option(..., help="where to write the subscriber's private key (mode 600)"),
                rid: str = typer.Option(..., help="recipient id the service will use for this subscriber")) -> None:
    """Create a subscriber key pair; prints the `rid:public` entry for LEPTON_RECIPIENTS."""
    import base64  # noqa: PLC0415
    import os  # noqa: PLC0415

    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    from security.recipients import generate_private, public_bytes  # noqa: PLC0415

    if private.exists():
        console.print(f"[red]{private} exists; refusing to overwrite a private key[/]")
        raise typer.Exit(2)
    key = generate_private()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    private.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(raw).decode() + "\n")
    print(f"{rid}:{base64.b64encode(public_bytes(key.public_key())).decode()}")
    console.print(f"private key written to {private}; add the line above to LEPTON_RECIPIENTS on the service")


@keys_app.command("rotate")
def keys_rotate(file: Path = typer.Option(Path(".lepton/keys")), kid: Optional[str] = typer.Option(None)) -> None:
    """Add a fresh key and make it active; old keys stay so old messages still open."""
    from security.keys import KeyRing  # noqa: PLC0415

    ring = KeyRing.from_file(file).rotated(kid)
    ring.write(file)
    console.print(f"{file}: active key is now {ring.active!r}; {len(ring.ids)} keys kept")


@keys_app.command("list")
def keys_list(file: Path = typer.Option(Path(".lepton/keys"))) -> None:
    """List key ids (never key material); the active one is marked."""
    from security.keys import KeyRing  # noqa: PLC0415

    ring = KeyRing.from_file(file)
    for k in ring.ids:
        print(f"{k}{'  (active)' if k == ring.active else ''}")


@bench_app.command("engine")
def bench_engine(nodes: int = typer.Option(100_000, help="nodes of the power-law graph"),
                 edges: int = typer.Option(1_000_000, help="edges of the power-law graph"),
                 batch: int = typer.Option(1000, help="edge inserts per incremental batch"),
                 batches: int = typer.Option(10, help="incremental batches to time"),
                 degree: str = typer.Option("bucket", help="degree features: log | bucket | none"),
                 endpoints: str = typer.Option("preferential", help="new-edge endpoints: preferential | uniform"),
                 prune_eps: float = typer.Option(1e-3, help="epsilon of the inexact prune mode"),
                 device: str = typer.Option("cpu", help="cpu | cuda"),
                 sustain: int = typer.Option(0, help="more exact batches back to back, through the graph's "
                                                     "compactions (the sustained rate)"),
                 json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """Incremental vs full recomputation, DGL vs torch kernels, bytes per edge, prune-mode error."""
    from gnn.bench import bench_engine as run_bench  # noqa: PLC0415

    _run_bench(run_bench, json_path, nodes=nodes, edges=edges, batch=batch, batches=batches, degree=degree,
               endpoints=endpoints, prune_eps=prune_eps, device=device, sustain=sustain)


@bench_app.command("ann")
def bench_ann(nodes: int = typer.Option(100_000, help="nodes of the power-law graph"),
              edges: int = typer.Option(1_000_000, help="edges of the power-law graph"),
              queries: int = typer.Option(500, help="query nodes (degree-biased, like touched nodes)"),
              k: int = typer.Option(20, help="neighbours per query"),
              nprobe: str = typer.Option("4,8,16,32", help="IVF cells probed, comma-separated"),
              batches: int = typer.Option(10, help="stream batches applied under the index (staleness)"),
              batch: int = typer.Option(1000, help="edges per stream batch"),
              json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """Exact vs IVF nearest-neighbour search over live embeddings: speed, recall@k, staleness."""
    from gnn.ann_bench import bench_ann as run_bench  # noqa: PLC0415

    _run_bench(run_bench, json_path, nodes=nodes, edges=edges, queries=queries, k=k,
               nprobes=tuple(int(x) for x in nprobe.split(",")), batches=batches, batch=batch)


@bench_app.command("processor")
def bench_processor(nodes: int = typer.Option(100_000, help="nodes of the pre-loaded power-law graph"),
                    edges: int = typer.Option(1_000_000, help="edges of the pre-loaded power-law graph"),
                    batch: int = typer.Option(1000, help="add events per micro-batch"),
                    batches: int = typer.Option(10, help="batches to time (after 2 warm-up batches)"),
                    top_k: Optional[int] = typer.Option(None, help="predictions per touched node (0: scoring only; "
                                                        "default LEPTON_TOP_K)"),
                    device: str = typer.Option("cpu", help="cpu | cuda"),
                    settings: list[str] = typer.Option([], "--set", help="service setting NAME=VALUE (LEPTON_ implied), "
                                                       "repeatable, e.g. --set HUBS=10 --set ANN_NPROBE=16"),
                    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """The core's batch path in process (no Kafka): events/s and microseconds per event by stage.
    Configured as the worker is: ``LEPTON_*`` settings and ``--set`` give the processor's settings
    and the kernel threads (``LEPTON_THREADS``: the cores less one, so one on two cores)."""
    from gnn.jit import set_split_threads  # noqa: PLC0415
    from gnn.kernels import set_threads  # noqa: PLC0415
    from gnn.processor_bench import bench_processor as run_bench  # noqa: PLC0415

    s = _settings(**{name.lower(): value for name, value in _set_pairs(settings).items()})
    set_threads(s.resolved_threads())
    set_split_threads(s.split_threads)
    _run_bench(run_bench, json_path, nodes=nodes, edges=edges, batch=batch, batches=batches, top_k=top_k,
               device=device, config=s.processor_config())


def _set_pairs(items: list[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` options as {NAME: VALUE}: upper case, ``LEPTON_`` dropped if given."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            console.print(f"[red]--set expects NAME=VALUE, got {item!r}[/]")
            raise typer.Exit(2)
        out[name.strip().upper().removeprefix("LEPTON_")] = value
    return out


def _run_bench(run: Callable[..., dict], json_path: Optional[Path], **kwargs: Any) -> None:
    """Run a benchmark under a spinner that shows its stage; print (and write) its JSON."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("starting", total=None)
        result = run(**kwargs, progress=lambda msg: bar.update(task, description=msg))
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@bench_app.command("e2e")
def bench_e2e(rate: float = typer.Option(5000.0, help="offered events per second"),
              duration: float = typer.Option(20.0, help="seconds of producing per rate"),
              sweep_rates: Optional[str] = typer.Option(None, "--sweep", help="comma-separated rates to try, e.g. "
                                                        "2000,5000,10000,20000: reports the highest held with p99 <= target"),
              p99_target_ms: float = typer.Option(250.0, help="latency target of --sweep"),
              preload_edges: int = typer.Option(1_000_000, help="edges of the pre-loaded power-law graph"),
              preload_nodes: int = typer.Option(100_000, help="nodes of the pre-loaded graph"),
              endpoints: str = typer.Option("graph", help="event endpoints: graph (degree-biased like the "
                                            "pre-loaded graph) | zipf (Zipf(1.6) ids: 44% of endpoints on one node)"),
              dataset: Optional[Path] = typer.Option(None, help="replay a real edge file instead (SNAP, CSV, JSON lines, "
                                                     "Parquet, DARPA zip): preload its first --preload-edges edges, "
                                                     "then stream the next ones in file order"),
              drain_timeout: float = typer.Option(120.0, help="seconds to wait for the worker to catch up after producing"),
              warmup: float = typer.Option(3.0, help="leading seconds of each run left out of the latency figures"),
              linger_ms: float = typer.Option(5.0, help="the bench producer sends the events due every this many ms "
                                              "(a Kafka producer's linger.ms; each event is stamped with its due time)"),
              bootstrap: Optional[str] = typer.Option(None, help="Kafka bootstrap (default: embedded broker)"),
              worker_env: list[str] = typer.Option([], "--set", help="worker setting NAME=VALUE (LEPTON_ implied), "
                                                   "repeatable, e.g. --set MAX_BATCH=2000"),
              json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """Producer -> broker -> worker -> lepton.predictions: throughput, latency percentiles, CPU, memory, costs."""
    import tempfile  # noqa: PLC0415

    from stream.bench_e2e import E2EConfig, run_e2e, sweep  # noqa: PLC0415
    from stream.broker import EmbeddedBroker  # noqa: PLC0415

    env = {f"LEPTON_{name}": value for name, value in _set_pairs(worker_env).items()}
    s = _settings(bootstrap=bootstrap)
    rates = [float(r) for r in sweep_rates.split(",")] if sweep_rates else None
    cfg = E2EConfig(rate=rate, duration=duration, preload_edges=preload_edges, preload_nodes=preload_nodes,
                    endpoints=endpoints, dataset=str(dataset) if dataset else None,
                    drain_timeout=drain_timeout, warmup=warmup, linger_ms=linger_ms, worker_env=env)
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
        broker = None if s.bootstrap else EmbeddedBroker(log_dir=Path(tmp) / "logs").start()
        try:
            result = run_e2e(s, s.bootstrap or broker.bootstrap, Path(tmp), cfg, rates=rates,  # type: ignore[union-attr]
                             say=lambda m: console.print(f"[dim]{m}[/]"))
        finally:
            if broker is not None:
                broker.stop()
    if rates:
        result["sweep"] = sweep(result["runs"], p99_target_ms)
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@app.command()
def train(dataset: Path = typer.Option(..., help="edge file (SNAP, CSV, JSON lines, Parquet)"),
          out: Path = typer.Option(Path(".lepton/model.pt"), help="checkpoint to write"),
          limit: Optional[int] = typer.Option(None, help="use only the first N edges"),
          batch: int = typer.Option(2000, help="edges per training batch"),
          seed: int = typer.Option(0), degree: str = typer.Option("bucket", help="log | bucket | none")) -> None:
    """Bootstrap a model on an initial graph: stream it, fit the link decoder, write a checkpoint."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from gnn.events import EdgeEvent  # noqa: PLC0415
    from gnn.io import read_edges  # noqa: PLC0415
    from gnn.processor import Processor, ProcessorConfig  # noqa: PLC0415

    table = read_edges(dataset, limit=limit)
    p = Processor(ProcessorConfig(seed=seed, degree_features=degree))  # type: ignore[arg-type]
    src, dst, ts, w, op = (table[c].to_numpy() for c in ("src", "dst", "ts", "weight", "op"))
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("train", total=len(table))
        for lo in range(0, len(table), batch):
            hi = min(lo + batch, len(table))
            p.process([EdgeEvent(src=str(src[i]), dst=str(dst[i]), ts=float(ts[i]), weight=float(w[i]), op=op[i])
                       for i in range(lo, hi)], now=float(ts[hi - 1]))
            bar.update(task, completed=hi)
    stream_s = time.perf_counter() - t0
    job = p.training_job()
    if job is None:
        console.print("[red]too few edges to fit a decoder (need at least 500)[/]")
        raise typer.Exit(2)
    t1 = time.perf_counter()
    p.install(job())
    fit_s = time.perf_counter() - t1
    meta = {"dataset": str(dataset), "edges": len(table), "nodes": p.graph.num_nodes, "stream_seconds": round(stream_s, 2),
            "fit_seconds": round(fit_s, 3), "seed": seed}
    version = p.save(str(out), meta)
    print(json.dumps({"checkpoint": str(out), "version": version, **meta}, indent=2))


@eval_app.command("anomaly")
def eval_anomaly(dataset: Path = typer.Option(..., help="edge file; with a `label` column (1 = anomalous) unless --inject"),
                 inject: Optional[float] = typer.Option(None, help="TADDY protocol: inject this share of anomalies"),
                 seed: int = typer.Option(0), snapshot: int = typer.Option(1000, help="edges per scored batch"),
                 tick: float = typer.Option(3600.0, help="MIDAS tick in seconds of the data's time"),
                 detector: str = typer.Option("service", help="service (whole scoring path) | midas (sketch only)"),
                 weights: Optional[str] = typer.Option(None, help="component weights, e.g. dormancy=1 (default: the service's)"),
                 json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """Edge anomaly AUC / AP: injected anomalies (TADDY protocol) or a labelled stream."""
    import numpy as np  # noqa: PLC0415
    import psutil  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from gnn.anomaly import parse_weights  # noqa: PLC0415
    from gnn.anomaly_eval import InjectionConfig, auc_ap, inject_anomalies, score_midas, score_stream  # noqa: PLC0415
    from gnn.io import read_edges  # noqa: PLC0415
    from gnn.processor import Processor, ProcessorConfig  # noqa: PLC0415

    table = read_edges(dataset)
    p = Processor(ProcessorConfig(top_k=0, tick_seconds=tick, seed=seed,
                                  anomaly_weights=parse_weights(weights) if weights else None))
    with Progress(TextColumn("[bold]score"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("score", total=None)
        prog = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        if inject is not None:
            train, test = inject_anomalies(table, InjectionConfig(rate=inject, snapshot=snapshot, seed=seed))
            score_stream(p, train, batch=snapshot)
            job = p.training_job()
            if job is not None:
                p.install(job())
        else:
            if "label" not in table:
                console.print("[red]no `label` column: pass --inject RATE for the injection protocol[/]")
                raise typer.Exit(2)
            test = table
        res = score_midas(test, tick=tick) if detector == "midas" else score_stream(
            p, test, batch=snapshot, refit=inject is None, progress=prog)  # a labelled stream: as the service runs
    y = (test["label"].to_numpy() != 0).astype(int)
    comps = {k: auc_ap(y, res[k]) for k in p.detector.weights if k in res}
    out = {"dataset": str(dataset), "protocol": "taddy-injection" if inject is not None else "labelled",
           "detector": detector, "inject": inject, "seed": seed, "test_edges": len(test), "anomalies": int(y.sum()),
           **auc_ap(y, res["score"]), "components": comps, "weights": p.detector.weights,
           "edges_per_s": round(float(res["edges_per_s"])), "rss_mb": round(psutil.Process().memory_info().rss / 1e6),
           "model_version": p.model_version, "score_mean": round(float(np.mean(res["score"])), 4)}
    text = json.dumps(out, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@eval_app.command("linkpred")
def eval_linkpred(dataset: Path = typer.Option(..., help="edge file (SNAP, CSV, JSON lines, Parquet)"),
                  seed: int = typer.Option(0, help="seed of the negative samples"),
                  degree: str = typer.Option("bucket", help="degree features of the model: log | bucket | none"),
                  mrr_negatives: int = typer.Option(100, help="negatives per positive for MRR (0 = skip)"),
                  json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """DyGLib protocol (70/15/15 by time, random negatives): AP, AUC, MRR for the model and EdgeBank."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from gnn.evaluation import (EdgeBank, EmbeddingScorer, LinkPredConfig, TrainedScorer,  # noqa: PLC0415
                                evaluate_linkpred)
    from gnn.io import read_edges  # noqa: PLC0415
    from gnn.processor import Processor, ProcessorConfig  # noqa: PLC0415

    table = read_edges(dataset)

    def processor() -> Processor:
        return Processor(ProcessorConfig(degree_features=degree, seed=seed))  # type: ignore[arg-type]

    scorers = {"model": TrainedScorer(processor()), "embedding_only": EmbeddingScorer(processor()),
               "edgebank": EdgeBank()}
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]test batches"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("eval", total=None)
        res = evaluate_linkpred(table, scorers, config=LinkPredConfig(seed=seed, mrr_negatives=mrr_negatives),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    result = {"dataset": str(dataset), "edges": len(table), "seed": seed, "protocol": "dyglib-random",
              "model": "GraphSAGE embeddings + pair features, logistic decoder fitted on the history",
              **{k: v for k, v in res["model"].items()},
              **{f"edgebank_{k}": v for k, v in res["edgebank"].items() if k != "batches"},
              **{f"embedding_only_{k}": v for k, v in res["embedding_only"].items() if k != "batches"},
              "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@eval_app.command("online")
def eval_online(dataset: Path = typer.Option(..., help="edge file (SNAP, CSV, JSON lines, Parquet, DARPA zip), in time order"),
                preload: int = typer.Option(0, help="edges bulk-loaded first (not scored)"),
                events: Optional[int] = typer.Option(None, help="edges streamed after the preload (default: all)"),
                batch: int = typer.Option(1_000, help="events per micro-batch (the worker's batch at your rate)"),
                refit_every: int = typer.Option(5_000, help="LEPTON_REFIT_EVERY: training edges between fits"),
                train_per_batch: int = typer.Option(512, help="LEPTON_TRAIN_PER_BATCH: training edges a batch adds at most"),
                seed: int = typer.Option(0, help="model and sampling seed"),
                json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """Prequential AUC / AP of the online decoder: each batch's training pairs scored before any fit sees them."""
    from gnn.online_eval import evaluate_online  # noqa: PLC0415
    from gnn.processor import ProcessorConfig  # noqa: PLC0415

    _run_stream_eval(evaluate_online, dataset, ProcessorConfig(top_k=0, refit_every=refit_every,
                                                               train_per_batch=train_per_batch, seed=seed),
                     {"refit_every": refit_every, "train_per_batch": train_per_batch, "seed": seed}, json_path,
                     preload=preload, events=events, batch=batch)


@eval_app.command("served")
def eval_served(dataset: Path = typer.Option(..., help="edge file (SNAP, CSV, JSON lines, Parquet, DARPA zip), in time order"),
                preload: int = typer.Option(0, help="edges bulk-loaded first (no lists served for them)"),
                events: Optional[int] = typer.Option(None, help="edges streamed after the preload (default: all)"),
                batch: int = typer.Option(200, help="events per micro-batch"),
                top_k: int = typer.Option(_default("top_k"), help="LEPTON_TOP_K: partners per served list"),
                candidates: int = typer.Option(_default("candidates"),
                                               help="LEPTON_CANDIDATES: embedding and 2-hop candidates per node"),
                hubs: int = typer.Option(_default("hubs"), help="LEPTON_HUBS: nodes gaining new partners fastest, added to every "
                                         "node's candidates"),
                seed: int = typer.Option(0, help="model and sampling seed"),
                json_path: Optional[Path] = typer.Option(None, "--json", help="also write the JSON here")) -> None:
    """Hits@k and MRR of the lists the service publishes: was each new edge's partner in the list last served?"""
    from gnn.processor import ProcessorConfig  # noqa: PLC0415
    from gnn.served_eval import evaluate_served  # noqa: PLC0415

    config = ProcessorConfig(top_k=top_k, candidates=candidates, hubs=hubs, seed=seed)
    _run_stream_eval(evaluate_served, dataset, config,
                     {"top_k": top_k, "candidates": candidates, "hubs": hubs, "seed": seed}, json_path,
                     preload=preload, events=events, batch=batch)


def _run_stream_eval(evaluate: Callable[..., dict], dataset: Path, config: Any, settings: dict[str, Any],
                     json_path: Optional[Path], *, preload: int, events: Optional[int], batch: int) -> None:
    """Stream ``dataset`` through ``evaluate`` (a processor-replaying evaluation) under a batch
    progress bar; print (and write) its JSON with the settings it ran with."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from gnn.io import read_edges  # noqa: PLC0415

    table = read_edges(dataset)
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]batches"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("eval", total=None)
        res = evaluate(table, config, preload=preload, events=events, batch=batch,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    result = {"dataset": str(dataset), "preload": preload, "batch": batch, **settings, **res,
              "seconds": round(time.perf_counter() - t0, 1)}
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")


@state_app.command("inspect")
def state_inspect(state_dir: Path = typer.Option(Path(".lepton"), help="the worker's LEPTON_STATE_DIR"),
                  as_json: bool = typer.Option(False, "--json", help="print JSON only"),
                  verify: bool = typer.Option(False, help="load the snapshot and recompute its summary")) -> None:
    """Newest snapshot: node/edge counts, total weight, edge-set hash, offsets, model version."""
    from gnn.errors import GnnError  # noqa: PLC0415
    from gnn.snapshot import latest_snapshot, load_snapshot, read_meta, summary  # noqa: PLC0415

    path = latest_snapshot(state_dir / "snapshots")
    if path is None:
        console.print(f"[red]no snapshot under {state_dir / 'snapshots'}[/]")
        raise typer.Exit(1)
    try:
        meta = read_meta(path)
        out = {"snapshot": str(path), "seq": meta["seq"], "created": meta["created"], **meta["summary"],
               "offsets": meta.get("offsets", {}), "totals": meta.get("totals", {})}
        journal = state_dir / "journal.jsonl"
        out["journaled_batches"] = len(journal.read_text().splitlines()) if journal.exists() else 0
        if verify:
            out["verified"] = summary(load_snapshot(path)[0]) == meta["summary"]
    except GnnError as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    print(json.dumps(out, indent=None if as_json else 2))
    if verify and not out["verified"]:
        raise typer.Exit(1)


def main() -> None:
    from security.errors import SecurityError  # noqa: PLC0415
    from gnn.errors import GnnError  # noqa: PLC0415
    from stream.allocator import keep_freed_blocks  # noqa: PLC0415

    keep_freed_blocks()  # large temporary tensors: no page faults per batch (see stream/allocator.py)
    try:
        app()
    except (SecurityError, GnnError) as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
