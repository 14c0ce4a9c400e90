"""Webhook delivery against a real aiohttp receiver on loopback."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from aiohttp import web

from security.signing import verify
from stream.broker import free_port
from stream.webhooks import IDEMPOTENCY_HEADER, Endpoint, WebhookDelivery, parse_endpoints

pytestmark = pytest.mark.integration
SECRET = b"s3cret"


class Receiver:
    """Verifies signatures, answers ``fail_first`` requests with ``status``, dedupes by idempotency key."""

    def __init__(self, port: int, *, fail_first: int = 0, status: int = 500) -> None:
        self.port, self.fail_first, self.status = port, fail_first, status
        self.posts = 0
        self.accepted: dict[str, dict] = {}
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verify(SECRET, request.headers, body)  # raises -> 500 from aiohttp, which the test would notice
        self.posts += 1
        if self.posts <= self.fail_first:
            return web.Response(status=self.status)
        self.accepted.setdefault(request.headers[IDEMPOTENCY_HEADER], await request.json())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


def _delivery(port: int, tmp: Path, dead: list, **kw: object) -> WebhookDelivery:
    async def on_dead(alert: dict, endpoint: str, reason: str) -> None:
        dead.append((alert["id"], endpoint, reason))

    return WebhookDelivery([Endpoint("ops", f"http://127.0.0.1:{port}/hook", SECRET)], spool_dir=tmp,
                           base_delay=0.01, max_delay=0.05, on_dead=on_dead, rng=random.Random(0), **kw)  # type: ignore[arg-type]


def test_retries_until_delivered_exactly_once(tmp_path: Path) -> None:
    async def run() -> None:
        port, dead = free_port(), []
        rx = Receiver(port, fail_first=2)
        await rx.start()
        d = _delivery(port, tmp_path, dead)
        try:
            assert await d.deliver({"id": "a1", "kind": "edge_anomaly", "score": 0.99}) == {"ops": "delivered"}
        finally:
            await d.close()
            await rx.stop()
        assert rx.posts == 3 and list(rx.accepted) == ["a1"] and d.stats["retries"] == 2 and not dead

    asyncio.run(run())


def test_down_endpoint_spools_dead_letters_and_delivers_after_recovery(tmp_path: Path) -> None:
    async def run() -> None:
        port, dead = free_port(), []
        d = _delivery(port, tmp_path, dead, max_attempts=2, breaker_threshold=1, breaker_cooldown=0.2)
        try:
            assert await d.deliver({"id": "b1", "score": 0.9}) == {"ops": "spooled"}
            assert await d.deliver({"id": "b2", "score": 0.9}) == {"ops": "spooled"}  # breaker open: no wait
            assert d.spooled("ops") == 2 and [x[0] for x in dead] == ["b1", "b2"]
            assert "circuit breaker open" in dead[1][2]
            rx = Receiver(port)
            await rx.start()
            await asyncio.sleep(0.25)  # cooldown over
            assert await d.flush_spool() == 2
            assert d.spooled("ops") == 0 and list(rx.accepted) == ["b1", "b2"]
            await rx.stop()
        finally:
            await d.close()

    asyncio.run(run())


def test_rejection_is_dead_lettered_not_retried(tmp_path: Path) -> None:
    async def run() -> None:
        port, dead = free_port(), []
        rx = Receiver(port, fail_first=10, status=400)
        await rx.start()
        d = _delivery(port, tmp_path, dead)
        try:
            assert await d.deliver({"id": "c1"}) == {"ops": "rejected"}
        finally:
            await d.close()
            await rx.stop()
        assert rx.posts == 1 and d.spooled("ops") == 0 and dead[0][2] == "rejected: HTTP 400"

    asyncio.run(run())


def test_endpoint_parsing() -> None:
    eps = parse_endpoints("ops=https://h.example/a|k1, sec=http://127.0.0.1:9/x|k2")
    assert [(e.name, e.url, e.secret) for e in eps] == [("ops", "https://h.example/a", b"k1"),
                                                        ("sec", "http://127.0.0.1:9/x", b"k2")]
    assert "k1" not in repr(eps[0])
    with pytest.raises(ValueError):
        parse_endpoints("nourl")
