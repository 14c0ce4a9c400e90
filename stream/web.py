"""The worker's web port: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``,
``/api/status`` (JSON) and ``/ui`` (the operator dashboard, which polls ``/api/status``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from stream.ui import DASHBOARD

if TYPE_CHECKING:
    from stream.worker import Worker

__all__ = ["start_web", "routes"]

_LOOPBACK = ("127.0.0.1", "::1")


def routes(worker: "Worker") -> web.Application:
    """The aiohttp application serving ``worker``'s pages."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=worker.pipeline.metrics.render(), content_type="text/plain",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"ready": worker.ready}, status=200 if worker.ready else 503)

    async def status(request: web.Request) -> web.Response:
        plaintext = worker.settings.ui_plaintext and request.remote in _LOOPBACK
        return web.json_response(worker.status(plaintext=plaintext), headers={"Cache-Control": "no-store"})

    async def ui(_: web.Request) -> web.Response:
        return web.Response(text=DASHBOARD, content_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                     "style-src 'unsafe-inline'", "Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/ui", ui)
    return app


async def start_web(worker: "Worker") -> web.AppRunner:
    """Serve on ``settings.web_host:web_port``; the caller cleans the runner up."""
    s = worker.settings
    runner = web.AppRunner(routes(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, s.web_host, s.web_port).start()
    return runner
