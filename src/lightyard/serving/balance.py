"""Spreading keep-alive connections over the workers."""

from __future__ import annotations

import time
from typing import Any

SWEEP_AT = 4096  # connections remembered before forgetting the ones not seen for a while


class RecycleConnections:
    """ASGI middleware: a keep-alive connection open for `max_age_s` is asked to reconnect
    (`Connection: close` on its next response).

    The workers share one listening socket, and the first to wake accepts every connection waiting on
    it: a client that opens its connections at once (a proxy's pool, a load generator) can land all of
    them on one worker while the others idle (seen with a load generator's pool: nearly every connection
    on one of two workers). A reconnecting client is taken by whichever worker is
    free to accept first, so recycling connections every few seconds spreads them out again.
    """

    def __init__(self, app: Any, max_age_s: float) -> None:
        self.app = app
        self.max_age_s = max_age_s
        self.opened: dict[tuple, float] = {}  # client (host, port) of an open connection → first seen

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        key = tuple(client)
        if now - self.opened.setdefault(key, now) < self.max_age_s:
            if len(self.opened) > SWEEP_AT:
                self.opened = {k: t for k, t in self.opened.items() if now - t < self.max_age_s}
            await self.app(scope, receive, send)
            return
        del self.opened[key]

        async def closing_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing_send)
