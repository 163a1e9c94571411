"""``/v1/stream``: trigger-word detection on a WebSocket, events as they happen.

Protocol (``ws://HOST:PORT/v1/stream?model=<registered name>&threshold=<0..1>``, both optional):

1. the server sends ``{"type": "ready", "request_id", "model", "model_version", "sample_rate": 16000,
   "format": "pcm_s16le", "vad_gate"}``;
2. the client sends **binary** messages of 16 kHz mono 16-bit little-endian PCM of any size (20–100 ms
   recommended; an odd byte is kept for the next message); at most ``serve.limits.max_frame_bytes``
   per message (the socket closes with 1009 past it);
3. the server sends ``{"type": "detection", "start", "end", "score", "model_version", "model"}`` as
   soon as the detector reports one (times in seconds from the first sample of the stream);
4. the client sends the text ``{"type": "end"}`` to flush: the last detections, then
   ``{"type": "end", "duration_s"}``, and the server closes (1000). Closing without it is fine too.

Errors are ``{"type": "error", "error": one line, "request_id"}`` followed by a close: 1008 (no such
model / bad parameter), 1013 (no model loaded yet: try again later), 1011 (the model failed).

A stream keeps the version that was serving when it opened (its recurrent state belongs to that
version), even if the alias moves meanwhile; new streams get the new version. Memory per stream is
bounded: the detector's own state, at most one odd byte, and with the VAD gate a ring of the last
:data:`seqflow.serve.vad.RING_S` seconds. Streams have no time limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from starlette.websockets import WebSocket, WebSocketDisconnect

from seqflow.serve.audio_input import pcm16_to_float
from seqflow.serve.errors import ApiError
from seqflow.serve.vad import StreamRing

log = logging.getLogger("seqflow.serve")


class StreamRefused(Exception):
    """Why a stream cannot start: ``code`` is the WebSocket close code."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _event(d: dict, loaded) -> dict:
    out = {"type": "detection", "start": float(d["start"]), "end": float(d["end"]), "score": float(d["score"]),
           "model_version": loaded.version, "model": loaded.ref.name}
    if "vad_speech_prob" in d:
        out["vad_speech_prob"] = d["vad_speech_prob"]
    return out


class _Session:
    """One socket's detector stream (+ VAD ring); all calls run in the model executor, one at a time."""

    def __init__(self, loaded, threshold: float | None, vad, vad_counter) -> None:
        self.loaded, self.vad, self.vad_counter = loaded, vad, vad_counter
        self.stream = loaded.engine.stream(threshold=threshold)
        self.ring = StreamRing() if vad is not None else None
        self.samples = 0

    def _gate(self, dets: list[dict]) -> list[dict]:
        if self.vad is None or not dets:
            return dets
        return self.vad.filter(self.ring.samples, dets, offset_s=self.ring.offset_s, counter=self.vad_counter)

    def push(self, samples) -> list[dict]:
        self.samples += len(samples)
        if self.ring is not None:
            self.ring.push(samples)
        return self._gate(list(self.stream.push(samples)))

    def flush(self) -> list[dict]:
        return self._gate(list(self.stream.flush()))


async def serve_stream(ws: WebSocket, app_state) -> None:
    """Run one ``/v1/stream`` connection (protocol in the module doc). ``app_state``: the app's
    :class:`seqflow.serve.app.ServeState`."""
    rid = uuid.uuid4().hex
    metrics = app_state.metrics
    await ws.accept()
    try:
        params = ws.query_params
        threshold = None
        if params.get("threshold") is not None:
            try:
                threshold = float(params["threshold"])
            except ValueError:
                raise StreamRefused(1008, f"threshold must be a number in [0, 1], got {params['threshold']!r}")
            if not 0.0 <= threshold <= 1.0:
                raise StreamRefused(1008, f"threshold must be in [0, 1], got {threshold:g}")
        try:
            loaded = app_state.pick("detect", params.get("model"))
        except ApiError as e:
            raise StreamRefused(1013 if e.status == 503 else 1008, str(e)) from e
        if not hasattr(loaded.engine, "stream"):
            raise StreamRefused(1011, f"{loaded.ref.name} v{loaded.version}: this detector has no stream() "
                                      "(needs seqflow.serve.detector DetectionStream)")
        session = _Session(loaded, threshold, app_state.vad if app_state.settings.vad_enabled else None,
                           metrics.vad_gate)
    except StreamRefused as e:
        await _refuse(ws, rid, e.code, str(e), metrics)
        return
    metrics.stream_connections.inc()
    loop = asyncio.get_running_loop()
    leftover = b""
    try:
        await ws.send_json({"type": "ready", "request_id": rid, "model": loaded.ref.name,
                            "model_version": loaded.version, "sample_rate": int(loaded.sample_rate),
                            "format": "pcm_s16le", "vad_gate": session.vad is not None})
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            if msg.get("bytes") is not None:
                if len(msg["bytes"]) > app_state.settings.max_frame_bytes:
                    await _refuse(ws, rid, 1009, f"message of {len(msg['bytes'])} bytes; the limit is "
                                                 f"{app_state.settings.max_frame_bytes}", metrics)
                    return
                data = leftover + msg["bytes"]
                n = len(data) // 2 * 2
                leftover = data[n:]
                if not n:
                    continue
                samples = pcm16_to_float(data[:n])
                dets = await loop.run_in_executor(app_state.executor, session.push, samples)
                await _send_events(ws, dets, loaded, metrics)
                continue
            text = msg.get("text") or ""
            try:
                kind = json.loads(text).get("type")
            except (json.JSONDecodeError, AttributeError):
                kind = text.strip().strip('"')
            if kind in ("end", "flush"):
                dets = await loop.run_in_executor(app_state.executor, session.flush)
                await _send_events(ws, dets, loaded, metrics)
                await ws.send_json({"type": "end", "request_id": rid,
                                    "duration_s": session.samples / float(loaded.sample_rate)})
                await ws.close(1000)
                return
            await ws.send_json({"type": "error", "request_id": rid,
                                "error": f"unknown text message {text[:80]!r}: send binary PCM, or {{\"type\": \"end\"}}"})
            metrics.stream_events.labels("error").inc()
    except WebSocketDisconnect:
        pass
    except Exception as e:  # noqa: BLE001 - one line to the client, the traceback to the log
        log.exception("stream %s failed", rid)
        await _refuse(ws, rid, 1011, f"internal error (request id {rid}): {type(e).__name__}", metrics)
    finally:
        metrics.stream_connections.dec()


async def _send_events(ws: WebSocket, dets: list[dict], loaded, metrics) -> None:
    for d in dets:
        await ws.send_json(_event(d, loaded))
        metrics.stream_events.labels("detection").inc()


async def _refuse(ws: WebSocket, rid: str, code: int, message: str, metrics) -> None:
    metrics.stream_events.labels("error").inc()
    try:
        await ws.send_json({"type": "error", "error": " ".join(message.split())[:500], "request_id": rid})
        await ws.close(code)
    except (WebSocketDisconnect, RuntimeError):
        pass
