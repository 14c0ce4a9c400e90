"""One typed settings object for the whole service (env ``LEPTON_*``; CLI flags override).

Every field is documented in the README's configuration table; ``lepton run --help`` shows
the flags that override them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from gnn.processor import ProcessorConfig

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Service configuration. Secrets are ``SecretStr`` and never printed."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_", frozen=True, extra="forbid")

    # broker and topics
    bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset = start the embedded broker")
    app_id: str = Field("lepton", description="consumer group id (workers sharing it split the outputs)")
    topic_edges: str = "lepton.edges"
    topic_nodes: str = "lepton.nodes"
    topic_predictions: str = "lepton.predictions"
    topic_alerts: str = "lepton.alerts"
    topic_deadletter: str = "lepton.deadletter"
    edges_partitions: int = Field(4, ge=1)
    output_partitions: int = Field(4, ge=1)
    replication: int = Field(1, ge=1)
    # consumer-group timing: aiokafka defaults made the first join take ~23 s on Tansu
    session_timeout: float = Field(6.0, gt=0)
    heartbeat_interval: float = Field(1.0, gt=0)
    rebalance_timeout: float = Field(3.0, gt=0)
    fetch_max_wait_ms: int = Field(50, ge=1, description="longest a fetch waits for data")
    fetch_partition_bytes: int = Field(1 << 20, ge=1024, description="prefetch bound per partition (backpressure)")
    linger_ms: int = Field(2, ge=0, description="producer batching delay")
    producer_batch_bytes: int = Field(512 * 1024, ge=16 * 1024, description="largest producer batch per partition")

    # micro-batching
    batch_mode: Literal["adaptive", "fixed"] = Field(
        "adaptive", description="adaptive: size and window chosen to hold latency_target; fixed: max_batch/batch_window")
    latency_target: float = Field(0.25, gt=0, description="p99 seconds the adaptive controller aims for")
    batch_limit: int = Field(20_000, ge=1, description="largest batch the adaptive controller may choose")
    max_batch: int = Field(500, ge=1, description="batch size in fixed mode")
    batch_window: float = Field(0.2, gt=0, description="seconds to wait for a batch to fill (fixed mode)")

    # engine and model
    directed: bool = False
    hidden: int = Field(64, ge=1)
    embedding_dim: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    aggregator: Literal["sum", "mean", "wmean"] = "mean"
    hashed_dim: int = Field(16, ge=0)
    feature_dim: int = Field(0, ge=0, description="dimension of lepton.nodes features (0 = not used)")
    degree_features: Literal["log", "bucket", "none"] = Field(
        "bucket", description="degree inputs: log1p, floor(log2) buckets (cheap exact updates), or none")
    backend: Literal["auto", "dgl", "torch"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="threads of the worker's kernel pools (torch, DGL, NumPy's BLAS); "
                         "0: one per core less one, left to the event loop (Kafka I/O, decode, sealing)")
    split_threads: int = Field(0, ge=0, description="threads that large compiled serving loops (IVF selection, arc "
                               "lookups, common neighbours, pair cosines) are split over; 0: every core (plain threads: "
                               "idle, they wait without spinning)")
    prune_eps: float | None = None
    top_k: int = Field(10, ge=1)
    predictions_per_event: float = Field(0.0, ge=0, description="top-k budget of a batch per event it holds (at "
                                         "least 16); touched nodes beyond it wait, oldest first; 0: every touched node")
    candidates: int = Field(10, ge=0, description="top-k candidates per touched node: this many embedding nearest "
                            "neighbours and about as many 2-hop nodes")
    hubs: int = Field(20, ge=0, description="the nodes with the most first-time partners lately, also candidates "
                      "of every touched node")
    ann: Literal["auto", "exact", "ivf"] = Field(
        "auto", description="embedding nearest-neighbour search for top-k candidates (auto: IVF from ann_min_nodes; on "
        "CUDA exact below 2M rows)")
    ann_min_nodes: int = Field(50_000, ge=0)
    ann_min_work: int = Field(2_000_000, ge=0, description="auto: IVF also for batches whose exact search would take "
                              "touched nodes x graph rows >= this (a burst of distinct nodes); 0: by graph size only")
    ann_nprobe: int = Field(8, ge=1, description="IVF cells scanned per query")
    refit_every: int = Field(5_000, ge=1, description="new training edges between online decoder fits (background process)")
    train_per_batch: int = Field(512, ge=1, description="online training edges a batch adds at most (a seeded sample "
                                 "of larger batches, each with one negative pair)")
    model: Path | None = Field(None, description="checkpoint from `lepton train` to start from (transfer)")
    alert_rate: float = Field(0.002, gt=0, lt=1)
    tick_seconds: float = Field(60.0, gt=0)
    anomaly_weights: str | None = Field(None, description="e.g. dormancy=0.5,surprise=0.3,midas=0.1,burst=0.1")
    activity_window: float = Field(1000.0, gt=0, description="edges the dormancy score remembers")
    seed: int = 0

    # security
    keys: SecretStr | None = Field(None, description="kid:base64key[,kid:base64key...]; last is active")
    key_file: Path | None = None
    recipients: str | None = Field(None, description="rid:base64(X25519 public key),...: seal per subscriber")
    webhooks: SecretStr | None = Field(None, description="name=url|secret,...: operator webhooks for alerts")
    encrypt_alerts: bool = True
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    # state and recovery
    snapshot_events: int = Field(100_000, ge=1, description="snapshot after this many input records ...")
    snapshot_seconds: float = Field(60.0, gt=0, description="... or this many seconds, whichever first")
    snapshot_keep: int = Field(2, ge=1, description="snapshots kept in STATE_DIR/snapshots")
    gc_freeze: bool = Field(True, description="freeze the objects alive at start out of garbage collection "
                            "(full collections then walk only what the stream allocated since)")
    snapshot_background: bool = Field(True, description="write periodic snapshots from a forked child (CPU state)")
    webhook_inflight: int = Field(64, ge=1, description="background webhook deliveries; beyond: spooled")

    # process
    state_dir: Path = Path(".lepton")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    ui_plaintext: bool = Field(False, description="/ui shows prediction partners (only to loopback clients)")
    log_level: Literal["debug", "info", "warn", "error"] = "warn"

    @field_validator("edges_partitions", "output_partitions")
    @classmethod
    def _sane_partitions(cls, v: int) -> int:
        if v > 1024:
            raise ValueError("more than 1024 partitions per topic is almost certainly a mistake")
        return v

    @field_validator("anomaly_weights")
    @classmethod
    def _known_weights(cls, v: str | None) -> str | None:
        if v is not None:
            from gnn.anomaly import AnomalyDetector, parse_weights  # noqa: PLC0415

            AnomalyDetector(weights=parse_weights(v))  # raises ValueError with the reason
        return v

    def resolved_device(self) -> str:
        """``auto`` means CUDA when torch sees a GPU, else CPU."""
        if self.device != "auto":
            return self.device
        import torch  # noqa: PLC0415 - heavy import only when needed

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_threads(self) -> int:
        """Kernel threads: ``threads``, or (0) the cores this process may use less one, at least 1.
        On 2 cores one thread beat two end to end (DARPA at 20,000/s offered: 14.3-15.8k vs
        11.4-13.7k events/s): idle OpenMP and OpenBLAS helpers spin between calls, on the loop's core."""
        if self.threads:
            return self.threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores - 1)

    def processor_config(self) -> "ProcessorConfig":
        from gnn.anomaly import parse_weights  # noqa: PLC0415
        from gnn.processor import ProcessorConfig  # noqa: PLC0415 - keeps torch out of CLI start-up

        return ProcessorConfig(directed=self.directed, hashed_dim=self.hashed_dim, feature_dim=self.feature_dim,
                               degree_features=self.degree_features,
                               hidden=self.hidden, out=self.embedding_dim, layers=self.layers,
                               aggregator=self.aggregator, backend=self.backend, device=self.resolved_device(),
                               prune_eps=self.prune_eps, top_k=self.top_k,
                               predictions_per_event=self.predictions_per_event, refit_every=self.refit_every,
                               train_per_batch=self.train_per_batch,
                               ann=self.ann, ann_min_nodes=self.ann_min_nodes, ann_min_work=self.ann_min_work,
                               ann_nprobe=self.ann_nprobe, candidates=self.candidates, hubs=self.hubs,
                               model_path=str(self.model) if self.model else None, alert_rate=self.alert_rate,
                               tick_seconds=self.tick_seconds, seed=self.seed, activity_window=self.activity_window,
                               anomaly_weights=parse_weights(self.anomaly_weights) if self.anomaly_weights else None)

    def topics(self) -> dict[str, int]:
        """Every topic the service uses, with its partition count."""
        return {self.topic_edges: self.edges_partitions, self.topic_nodes: self.edges_partitions,
                self.topic_predictions: self.output_partitions, self.topic_alerts: self.output_partitions,
                self.topic_deadletter: 1}


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with non-None ``overrides`` (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
