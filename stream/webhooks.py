"""Operator webhooks: signed POSTs with retries, a circuit breaker per endpoint, and a spool.

Every alert is POSTed as JSON with ``X-Lepton-Timestamp`` / ``X-Lepton-Signature``
(``security.signing``) and ``X-Lepton-Idempotency-Key`` (the alert id), so receivers verify
the sender and drop duplicates. Failures (connection errors, timeouts, 408/429/5xx) are
retried with exponential backoff and full jitter. After the last attempt the alert is
appended to the endpoint's spool file and handed to ``on_dead`` (the worker sends it to the
dead-letter topic); :meth:`WebhookDelivery.flush_spool` re-sends spooled alerts once the
endpoint answers again, oldest first, so nothing is lost. A 4xx other than 408/429 means
the receiver rejected the alert: it is dead-lettered, not retried. After ``breaker_threshold``
consecutive failed deliveries an endpoint's breaker opens for ``breaker_cooldown`` seconds:
new alerts go straight to the spool instead of waiting on a dead endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from security.signing import signature_headers

__all__ = ["Endpoint", "WebhookDelivery", "parse_endpoints", "IDEMPOTENCY_HEADER"]

log = logging.getLogger("lepton.webhooks")
IDEMPOTENCY_HEADER = "X-Lepton-Idempotency-Key"
_RETRYABLE = {408, 429}


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    secret: bytes = field(repr=False)


def parse_endpoints(text: str) -> list[Endpoint]:
    """``name=url|secret`` entries separated by commas (the ``LEPTON_WEBHOOKS`` format)."""
    out = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, rest = entry.partition("=")
        url, sep2, secret = rest.rpartition("|")
        if not (sep and sep2 and name and url.startswith(("http://", "https://")) and secret):
            raise ValueError(f"webhook entry {entry[:40]!r}: expected name=https://host/path|secret")
        out.append(Endpoint(name=name.strip(), url=url.strip(), secret=secret.encode()))
    return out


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0


class WebhookDelivery:
    """Deliver alerts to every endpoint; never raises for a failed delivery."""

    def __init__(self, endpoints: list[Endpoint], *, spool_dir: Path, max_attempts: int = 4, base_delay: float = 0.2,
                 max_delay: float = 5.0, timeout: float = 5.0, breaker_threshold: int = 3,
                 breaker_cooldown: float = 30.0, on_dead: Callable[[dict, str, str], Awaitable[Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.endpoints = endpoints
        self.spool_dir = spool_dir
        self.max_attempts, self.base_delay, self.max_delay = max_attempts, base_delay, max_delay
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.breaker_threshold, self.breaker_cooldown = breaker_threshold, breaker_cooldown
        self.on_dead = on_dead
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats: dict[str, int] = {"delivered": 0, "retries": 0, "failed": 0, "spooled": 0, "rejected": 0,
                                      "resent": 0}
        self._state = {e.name: _State() for e in endpoints}
        self._session: aiohttp.ClientSession | None = None
        spool_dir.mkdir(parents=True, exist_ok=True)

    async def deliver(self, alert: dict) -> dict[str, str]:
        """POST ``alert`` to every endpoint: ``{endpoint: delivered | spooled | rejected}``."""
        body = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode()
        results = await asyncio.gather(*(self._deliver_one(e, alert, body) for e in self.endpoints))
        return {e.name: r for e, r in zip(self.endpoints, results)}

    async def defer(self, alert: dict, reason: str) -> None:
        """Spool ``alert`` for every endpoint without trying (the caller is over its in-flight bound)."""
        for e in self.endpoints:
            await self._give_up(e, alert, reason)

    async def flush_spool(self) -> int:
        """Re-send spooled alerts to endpoints whose breaker lets us try; returns how many went out."""
        sent = 0
        for e in self.endpoints:
            path = self._spool(e)
            if not path.exists() or self._state[e.name].open_until > self.clock():
                continue
            pending = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            done = 0
            for alert in pending:
                body = json.dumps(alert, separators=(",", ":"), sort_keys=True).encode()
                if await self._post(e, alert, body) != "ok":
                    self._fail(e)
                    break
                done += 1
            if done:
                self._state[e.name] = _State()
                rest = pending[done:]
                tmp = path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(a) + "\n" for a in rest))
                tmp.replace(path)
                sent += done
                self.stats["resent"] += done
        return sent

    def spooled(self, endpoint: str) -> int:
        path = self.spool_dir / f"{endpoint}.jsonl"
        return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- helpers ---------------------------------------------------------------------------
    async def _deliver_one(self, e: Endpoint, alert: dict, body: bytes) -> str:
        state = self._state[e.name]
        if state.open_until > self.clock():  # breaker open: do not wait on a dead endpoint
            return await self._give_up(e, alert, "circuit breaker open")
        last = "?"
        for attempt in range(self.max_attempts):
            last = await self._post(e, alert, body)
            if last == "ok":
                self._state[e.name] = _State()
                self.stats["delivered"] += 1
                return "delivered"
            if last.startswith("rejected"):
                self.stats["rejected"] += 1
                await self._dead(alert, e.name, last)
                return "rejected"
            if attempt + 1 < self.max_attempts:
                self.stats["retries"] += 1
                await asyncio.sleep(self.rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt)))
        self._fail(e)
        return await self._give_up(e, alert, f"{self.max_attempts} attempts failed, last: {last}")

    async def _post(self, e: Endpoint, alert: dict, body: bytes) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: str(alert.get("id", "")),
                   **signature_headers(e.secret, body)}
        try:
            async with self._session.post(e.url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return "ok"
                if 400 <= resp.status < 500 and resp.status not in _RETRYABLE:
                    return f"rejected: HTTP {resp.status}"
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            return f"{type(err).__name__}: {err}"

    def _fail(self, e: Endpoint) -> None:
        state = self._state[e.name]
        state.failures += 1
        self.stats["failed"] += 1
        if state.failures >= self.breaker_threshold:
            state.open_until = self.clock() + self.breaker_cooldown
            log.warning("webhook %s: circuit breaker open for %.0fs", e.name, self.breaker_cooldown)

    async def _give_up(self, e: Endpoint, alert: dict, reason: str) -> str:
        with self._spool(e).open("a") as f:
            f.write(json.dumps(alert) + "\n")
        self.stats["spooled"] += 1
        await self._dead(alert, e.name, reason)
        return "spooled"

    async def _dead(self, alert: dict, endpoint: str, reason: str) -> None:
        if self.on_dead is not None:
            await self.on_dead(alert, endpoint, reason)

    def _spool(self, e: Endpoint) -> Path:
        return self.spool_dir / f"{e.name}.jsonl"
