"""A minimal operator webhook receiver for docker-compose: verify the signature, drop duplicates, log.

Reads its secret from ``LEPTON_WEBHOOKS`` (the endpoint named ``WEBHOOK_ENDPOINT``), so the
worker and the receiver share one secrets file.
"""

from __future__ import annotations

import json
import os

from aiohttp import web

from security.errors import SecurityError
from security.signing import verify
from stream.webhooks import IDEMPOTENCY_HEADER, parse_endpoints

ENDPOINT = os.environ.get("WEBHOOK_ENDPOINT", "ops")
SECRET = {e.name: e.secret for e in parse_endpoints(os.environ["LEPTON_WEBHOOKS"])}[ENDPOINT]
seen: set[str] = set()


async def alerts(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        verify(SECRET, request.headers, body)
    except SecurityError as err:
        return web.json_response({"error": str(err)}, status=401)
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    duplicate = key in seen
    if not duplicate:
        seen.add(key)
        print(json.dumps(json.loads(body)), flush=True)
    return web.json_response({"ok": True, "duplicate": duplicate})


app = web.Application()
app.router.add_post("/alerts", alerts)
if __name__ == "__main__":
    web.run_app(app, host="0.0.0.0", port=int(os.environ.get("WEBHOOK_PORT", "8080")))
