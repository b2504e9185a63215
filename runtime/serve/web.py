"""The Starlette app of `stpr-run --serve`: the page, its static files and the JSON API.

Every handler reads the `Hub` and the `Teacher`; none touches the stream. Blocking work
(JPEG encoding, reading uploaded clips) runs in the thread pool, waiting is async.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .hub import Hub
from .security import Logins, bearer_ok, host_allowed, origin_allowed
from .teach import Refused, Teacher, class_list

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
CSP = "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; connect-src 'self'"
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}
JSON_BODY_MAX = 64 * 1024  # a learn/remove request is a few names: more is not a request of ours
FRAME_WAIT_S = 2.0  # a frame request with ?after waits this long for a newer frame
HEARTBEAT_S = 15.0  # an idle event stream sends a comment so proxies keep it open


@dataclass
class ServeConfig:
    open: bool  # bound to loopback with no token: no token asked, Host must be a loopback name
    token: str
    max_upload_bytes: int
    max_upload_files: int
    view_fps: float = 15.0  # frames encoded for viewers per second, at most (all viewers together)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: Host check, token on /api, Origin on POST, and a body cap counted as
    bytes arrive (a Content-Length can lie, a chunked upload has none)."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path, method, host = scope["path"], scope["method"], headers.get("host")
        refusal = None
        if not host_allowed(host, self.config.open):
            refusal = _error(403, f"Host {host!r} is not this device's loopback name; open http://127.0.0.1:PORT/")
        elif path.startswith("/api/") and not self.config.open and \
                not bearer_ok(headers.get("authorization"), self.config.token):
            refusal = _error(401, "this device needs its token: open the one-time link stpr-run printed, or send "
                                  "Authorization: Bearer TOKEN (the token is in --serve-token-file)")
        elif method == "POST" and not origin_allowed(headers.get("origin"), host):
            refusal = _error(403, f"a state change from another page (Origin {headers.get('origin')!r}) is refused")
        cap = self.config.max_upload_bytes if path == "/api/clips" else JSON_BODY_MAX
        length = headers.get("content-length", "")
        if refusal is None and method == "POST" and length.isdigit() and int(length) > cap:
            refusal = _error(413, f"request body of {int(length)} bytes; the limit is {cap} bytes "
                                  "(--serve-max-upload-mb for clips)")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                raise _TooLarge(cap)
            return message
        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _error(413, f"request body over the limit of {cap} bytes (--serve-max-upload-mb for "
                              "clips)")(scope, receive, send)


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


def make_app(hub: Hub, teacher: Teacher, config: ServeConfig, logins: Logins,
             source_info: Callable[[], dict[str, Any]]) -> ASGIApp:
    """The ASGI app; `source_info()` gives the source's fixed description (kind, name)."""
    static = {name: resources.files(__package__).joinpath("static", name).read_bytes() for name in STATIC}
    waker: dict[str, Waker] = {}

    def get_waker() -> Waker:
        if "w" not in waker:
            waker["w"] = Waker(asyncio.get_running_loop())
            hub.listeners.append(waker["w"].wake)
        return waker["w"]

    def page(name: str) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            return Response(static[name], media_type=STATIC[name],
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})
        return serve

    async def login(request: Request) -> Response:
        if not logins.use(request.path_params["code"]):
            return Response("This login link was used already or is not valid. Read the token from the file "
                            "stpr-run named (--serve-token-file) and paste it into the page.\n", status_code=410,
                            media_type="text/plain")
        # The token goes in the fragment, which the browser never sends; the page stores it
        # and erases it from the address bar.
        return RedirectResponse(f"/#token={config.token}", status_code=303, headers={"Cache-Control": "no-store"})

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

    def _after(request: Request, name: str = "after") -> int:
        raw = request.query_params.get(name) or request.headers.get("last-event-id") or "0"
        if not raw.isdigit():
            raise Refused(400, f"?{name}={raw!r}: give a whole number (the last seq you have, or 0)")
        return int(raw)

    async def events(request: Request) -> Response:
        got, last = hub.events_after(_after(request))
        return JSONResponse({"events": got, "last": last}, headers={"Cache-Control": "no-store"})

    async def event_stream(request: Request) -> Response:
        after = _after(request)
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
        after = _after(request) if "after" in request.query_params else 0
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
                    return _error(503, "no frame yet: the source has not delivered one")
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
            if got is None:
                await w.wait(min(left, 0.5))
            else:
                await asyncio.sleep(min(left, got))

    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Refused(400, f"the body is not JSON ({e.msg if hasattr(e, 'msg') else e}); send e.g. "
                               "{\"name\": \"wave hello\"}") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object, e.g. {\"name\": \"wave hello\"}")
        return body

    def _accepted(job: Any) -> JSONResponse:
        return JSONResponse({"job": job.id, **job.public()}, status_code=202,
                            headers={"Location": f"/api/jobs/{job.id}"})

    async def learn(request: Request) -> Response:
        body = await _json(request)
        unknown = set(body) - {"name", "windows", "replace"}
        if unknown:
            raise Refused(400, f"unknown field(s) {sorted(unknown)}; a learn request has name, windows, replace")
        if "name" not in body:
            raise Refused(400, "no \"name\": give the action's name, e.g. {\"name\": \"wave hello\", \"windows\": 8}")
        return _accepted(teacher.submit_learn(body["name"], body.get("windows", 16), body.get("replace", True)))

    async def remove(request: Request) -> Response:
        body = await _json(request)
        if "name" not in body:
            raise Refused(400, "no \"name\": give the class to remove, e.g. {\"name\": \"wave hello\"}")
        return _accepted(teacher.submit_remove(body["name"]))

    async def undo(request: Request) -> Response:
        return _accepted(teacher.submit_undo())

    async def clips(request: Request) -> Response:
        try:
            form = await request.form(max_files=config.max_upload_files, max_fields=8, max_part_size=4096)
        except ClientDisconnect:
            return _error(400, "the upload was cut off")
        except HTTPException as e:  # too many files or fields
            raise Refused(413 if "Too many" in str(e.detail) else 400,
                          f"{e.detail}; send at most {config.max_upload_files} clips") from None
        folder = Path(tempfile.mkdtemp(prefix="stpr-upload-"))
        handed = False  # once a job has the folder, its thread deletes it after the tower pass
        try:
            name = form.get("name")
            files = [f for f in form.getlist("files") if not isinstance(f, str)]
            if not isinstance(name, str):
                raise Refused(400, "no \"name\" field: send the class name with the clips")
            if not files:
                raise Refused(400, "no clips: send video files in \"files\" fields")
            saved = []
            for i, upload in enumerate(files):  # our own names: no request value becomes a path
                ext = Path(upload.filename or "").suffix.lower()
                if ext not in VIDEO_EXTS:
                    raise Refused(400, f"upload {i + 1} is not a video file ({ext or 'no extension'}); send "
                                       f"{', '.join(sorted(VIDEO_EXTS))}")
                path = folder / f"clip-{i:03d}{ext}"
                with path.open("wb") as out:
                    await run_in_threadpool(shutil.copyfileobj, upload.file, out)
                saved.append(path)
            job = await run_in_threadpool(teacher.submit_clips, name, saved, folder)
            handed = True
            return _accepted(job)
        finally:
            await form.close()
            if not handed:
                shutil.rmtree(folder, ignore_errors=True)

    async def job(request: Request) -> Response:
        j = teacher.jobs.get(request.path_params["id"])
        if j is None:
            raise Refused(404, f"no job {request.path_params['id']!r}; jobs are listed at /api/jobs")
        return JSONResponse(j.public(), headers={"Cache-Control": "no-store"})

    async def jobs(request: Request) -> Response:
        return JSONResponse({"jobs": [j.public() for j in teacher.jobs.values()]},
                            headers={"Cache-Control": "no-store"})

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return _error(exc.status, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        return Response(str(exc.detail), status_code=exc.status_code, media_type="text/plain")

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [Route("/", page("index.html")), Route("/favicon.ico", no_icon), Route("/index.html", page("index.html")),
              Route("/app.js", page("app.js")), Route("/style.css", page("style.css")),
              Route("/login/{code}", login),
              Route("/api/status", status), Route("/api/events", events), Route("/api/events/stream", event_stream),
              Route("/api/frame.jpg", frame), Route("/api/jobs", jobs), Route("/api/jobs/{id}", job),
              Route("/api/learn", learn, methods=["POST"]), Route("/api/clips", clips, methods=["POST"]),
              Route("/api/remove", remove, methods=["POST"]), Route("/api/undo", undo, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={Refused: refused, HTTPException: http_error})
    return Guard(app, config)
