"""The worker's web port: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from stream.worker import Worker

__all__ = ["start_web", "routes"]


def routes(worker: "Worker") -> web.Application:
    """The aiohttp application serving ``worker``'s pages."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=worker.pipeline.metrics.render(), content_type="text/plain",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"ready": worker.ready}, status=200 if worker.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_web(worker: "Worker") -> web.AppRunner:
    """Serve on ``settings.web_host:web_port``; the caller cleans the runner up."""
    s = worker.settings
    runner = web.AppRunner(routes(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, s.web_host, s.web_port).start()
    return runner
