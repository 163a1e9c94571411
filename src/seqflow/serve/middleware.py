"""Per-request plumbing of the serving app (pure ASGI, so it also guards bodies that arrive in chunks).

* a request id on every HTTP response: the client's ``X-Request-ID`` when it is sane (1–128 of
  ``[A-Za-z0-9._:-]``), else a fresh uuid4 hex; sent back as the ``X-Request-ID`` header and put in
  ``scope["state"]["request_id"]`` for the JSON body;
* ``X-Model-Version`` header when the endpoint recorded which version answered;
* the body limit: a ``Content-Length`` above ``max_body_bytes`` is refused with 413 before anything
  is read; a body without one is counted as it arrives and :class:`BodyTooLarge` stops it;
* request count and latency for Prometheus, labelled by route template;
* any unexpected exception → a JSON 500 naming the request id (the traceback goes to the log only).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from seqflow.errors import SeqflowError

log = logging.getLogger("seqflow.serve")
_RID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BodyTooLarge(SeqflowError):
    """The request body grew past the limit while it was being read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the request body is larger than the {limit / 2**20:g} MB limit")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when sane, else a new uuid4 hex."""
    for k, v in headers:
        if k.lower() == b"x-request-id":
            rid = v.decode("latin-1").strip()
            if _RID.match(rid):
                return rid
    return uuid.uuid4().hex


def error_body(status: int, reason: str, message: str, rid: str | None, model_version: str | None) -> bytes:
    """The JSON every error carries: ``{"error": one line, "reason", "status", "request_id", "model_version"}``."""
    line = " ".join(str(message).split())[:500]
    return json.dumps({"error": line, "reason": reason, "status": status, "request_id": rid,
                       "model_version": model_version}).encode()


class RequestContext:
    """ASGI middleware (see module doc). ``metrics``: :class:`seqflow.serve.metrics.ServeMetrics`;
    ``paths``: the app's route paths (metric labels of requests refused before routing)."""

    def __init__(self, app, max_body_bytes: int, metrics, paths: frozenset[str] = frozenset()) -> None:
        self.app, self.max_body_bytes, self.metrics, self.paths = app, int(max_body_bytes), metrics, paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        rid = request_id(headers)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        t0 = time.perf_counter()
        started = {"status": None}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-request-id", rid.encode())]
                mv = state.get("model_version")
                if mv is not None:
                    extra.append((b"x-model-version", str(mv).encode()))
                message = {**message, "headers": list(message.get("headers") or []) + extra}
                started["status"] = message["status"]
            await send(message)

        async def reply(status: int, reason: str, msg: str) -> None:
            body = error_body(status, reason, msg, rid, state.get("model_version"))
            await send_wrapper({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
            await send_wrapper({"type": "http.response.body", "body": body})

        length = next((v for k, v in headers if k.lower() == b"content-length"), None)
        try:
            too_big = length is not None and int(length) > self.max_body_bytes
        except ValueError:
            too_big = False
        received = 0

        async def receive_wrapper():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            if too_big:
                await reply(413, "body_too_large", f"the request body ({int(length) / 2**20:.1f} MB) is larger "
                                                   f"than the {self.max_body_bytes / 2**20:g} MB limit")
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("request %s failed", rid)
            if started["status"] is None:
                await reply(500, "internal_error", f"internal error (request id {rid}); see the server log")
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or (scope["path"] if scope.get("path") in self.paths else "other")
            self.metrics.observe_request(endpoint, scope.get("method", ""), started["status"] or 500,
                                         time.perf_counter() - t0)
