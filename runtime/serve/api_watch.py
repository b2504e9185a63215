"""The read side of the JSON API: `/api/status`, `/api/events` and its push channel
(server-sent events), and `/api/frame.jpg`. Each handler reads the `Hub`; none waits
on the stream, and the stream never waits on them."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.recognizer import Recognizer
from ..model.head_sums import LEARNED_EXPERT
from .guard import ServeConfig, error_response
from .hub import Hub
from .jobs import Refused
from .teach import Teacher

FRAME_WAIT_S = 2.0  # a frame request with ?after waits this long for a newer frame
HEARTBEAT_S = 15.0  # an idle event stream sends a comment so proxies keep it open


class Waker:
    """Wakes the server's waiting handlers from the stream thread. The stream calls `wake`
    on every frame and event (hundreds a second): it crosses into the server's loop only
    when a handler waits and no wake-up is already on its way, so an idle or busy page
    costs the stream a flag check, not a system call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.waiting = 0
        self.pending = False

    def wake(self) -> None:  # any thread
        if not self.waiting or self.pending:
            return
        self.pending = True
        try:
            self.loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the loop has closed: the server is stopping
            pass

    def _fire(self) -> None:
        self.pending = False
        event, self.event = self.event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        self.waiting += 1
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self.waiting -= 1


def class_list(rec: Recognizer) -> list[dict[str, Any]]:
    """Every class the stream can name: where it came from and how many clips taught it."""
    b = rec.bundle
    head = b.manifest.get("head") or {}
    counts = (head.get("sums") or {}).get("counts")
    learned = head.get("learned") or {}
    device_clips = dict(zip(learned.get("classes", []), learned.get("clips", [])))
    c2e = b.manifest.get("class_to_expert") or [0] * len(b.classes)
    out = []
    for c, name in enumerate(b.classes):
        examples = None if counts is None else int(counts[c]) + int(device_clips.get(name, 0))
        out.append({"name": name, "origin": "device" if c2e[c] == LEARNED_EXPERT else "trained",
                    "examples": examples})
    for name in rec.zero_shot.names if rec.zero_shot else []:
        out.append({"name": name, "origin": "name", "examples": 0})
    return out


def after_of(request: Request, name: str = "after") -> int:
    """The last event seq the client has (?after= or an SSE reconnect's Last-Event-ID)."""
    raw = request.query_params.get(name) or request.headers.get("last-event-id") or "0"
    if not raw.isdigit():
        raise Refused(400, f"?{name}={raw!r}: give a whole number (the last seq you have, or 0)")
    return int(raw)


def watch_routes(hub: Hub, teacher: Teacher, config: ServeConfig,
                 source_info: Callable[[], dict[str, Any]]) -> list[Route]:
    """The read-only routes; `source_info()` gives the source's fixed description (kind, name)."""
    waker: dict[str, Waker] = {}

    def get_waker() -> Waker:
        if "w" not in waker:
            waker["w"] = Waker(asyncio.get_running_loop())
            hub.listeners.append(waker["w"].wake)
        return waker["w"]

    async def status(request: Request) -> Response:
        rec = teacher.serving
        bundle = None
        if rec is not None:
            b = rec.bundle
            head = b.manifest.get("head") or {}
            bundle = {"path": str(b.path), "sha256": b.manifest.get("manifest_sha256"),
                      "mode": head.get("mode", "stpr") if head else "stpr",
                      "experts": len(b.manifest.get("experts") or []), "classes": class_list(rec)}
        job = teacher.active
        return JSONResponse({"bundle": bundle, "source": {**source_info(), **hub.source}, "fps": round(hub.fps(), 2),
                             "lag_ms": hub.lag_ms(), "job": job.public() if job else None,
                             "undo": bool(teacher.history)}, headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        got, last = hub.events_after(after_of(request))
        return JSONResponse({"events": got, "last": last}, headers={"Cache-Control": "no-store"})

    async def event_stream(request: Request) -> Response:
        after = after_of(request)
        w = get_waker()
        loop = asyncio.get_running_loop()

        async def body() -> AsyncIterator[bytes]:
            nonlocal after
            yield b": stpr events\n\n"
            idle, sent_prediction = 0.0, 0.0
            while not hub.closing.is_set():
                got, last = hub.events_after(after)
                if got and got[0]["seq"] > after + 1 and after:  # this client fell behind the kept events
                    yield f"data: {json.dumps({'event': 'gap', 'missed': got[0]['seq'] - after - 1})}\n\n".encode()
                # Predictions are thinned to the view's rate (a page cannot show 200 a second); every
                # other event, and the newest prediction, always goes. /api/events has them all.
                newest = max((i for i, e in enumerate(got) if "top" in e), default=-1)
                for i, e in enumerate(got):
                    after = e["seq"]
                    if "top" in e and i != newest:
                        continue
                    if "top" in e:
                        now = loop.time()
                        if now - sent_prediction < 1.0 / config.view_fps:
                            continue
                        sent_prediction = now
                    yield f"id: {e['seq']}\ndata: {json.dumps(e)}\n\n".encode()
                if got:
                    idle = 0.0
                    await asyncio.sleep(1.0 / config.view_fps)  # batch what comes meanwhile
                    continue
                await w.wait(1.0)
                idle += 1.0
                if idle >= HEARTBEAT_S:
                    idle = 0.0
                    yield b": keep-alive\n\n"
        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def frame(request: Request) -> Response:
        after = after_of(request) if "after" in request.query_params else 0
        w = get_waker()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (FRAME_WAIT_S if "after" in request.query_params else 0.0)
        while True:
            got = await run_in_threadpool(hub.view, after, 1.0 / config.view_fps)
            if isinstance(got, tuple):
                f, jpeg = got
                age = 1000 * (time.monotonic() - f.captured)
                return Response(jpeg, media_type="image/jpeg",
                                headers={"Cache-Control": "no-store", "X-Frame-Seq": str(f.seq),
                                         "X-Frame-Age-Ms": f"{age:.1f}"})
            left = deadline - loop.time()
            if left <= 0 or hub.closing.is_set():
                if got is None and hub.latest_frame() is None:
                    return error_response(503, "no frame yet: the source has not delivered one")
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
            if got is None:
                await w.wait(min(left, 0.5))
            else:
                await asyncio.sleep(min(left, got))

    return [Route("/api/status", status), Route("/api/events", events),
            Route("/api/events/stream", event_stream), Route("/api/frame.jpg", frame)]
