"""A cap on request bodies, enforced while they arrive: a client cannot make the server buffer more."""

from __future__ import annotations

import json
from typing import Any


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a declared `Content-Length` over `max_bytes` is refused at once (413); a body that
    grows past it while streaming raises `BodyTooLarge` in whatever is reading it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _respond(send, 400, "the Content-Length header is not a number")
                return
            if length > self.max_bytes:
                await _respond(send, 413, self.message(length))
                return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.message(received))
            return message

        await self.app(scope, limited_receive, send)

    def message(self, size: int) -> str:
        return f"the request body ({size:,} bytes) is over the limit of {self.max_bytes:,} bytes: send less"


async def _respond(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
