"""Faust transport ``lepton://``: Faust's aiokafka transport with a configurable fetch wait.

Faust 0.15 hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Tansu answers a
fetch only when that wait expires, so records sat up to 1.5 s in the broker before the
worker saw them (measured: newest-record receive delay 0.5-2.5 s at 1,500 events/s). This
transport sets the wait from ``Settings.fetch_max_wait_ms`` instead; everything else is
Faust's own code.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as _fa

__all__ = ["Transport", "SCHEME", "set_fetch_max_wait_ms"]

SCHEME = "lepton"
_FETCH_MAX_WAIT_MS = 50


def set_fetch_max_wait_ms(ms: int) -> None:
    global _FETCH_MAX_WAIT_MS
    _FETCH_MAX_WAIT_MS = int(ms)


class _ConsumerThread(_fa.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS  # read by aiokafka when the fetcher starts
        return consumer


class _Consumer(_fa.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(_fa.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = "stream.transport:Transport"
