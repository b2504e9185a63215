"""What every request of `stpr-run --serve` passes before a handler sees it: the Host
check, the token on /api, the Origin check on POST and the body cap; and the one
shape of a refusal, `{"error": "one line"}`."""
from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import bearer_ok, host_allowed, origin_allowed

JSON_BODY_MAX = 64 * 1024  # a learn/remove request is a few names: more is not a request of ours


@dataclass


class ServeConfig:
    open: bool  # bound to loopback with no token: no token asked, Host must be a loopback name
    token: str
    max_upload_bytes: int
    max_upload_files: int
    view_fps: float = 15.0  # frames encoded for viewers per second, at most (all viewers together)


def error_response(status: int, message: str) -> JSONResponse:
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
            refusal = error_response(403, f"Host {host!r} is not this device's loopback name; open "
                                          "http://127.0.0.1:PORT/")
        elif path.startswith("/api/") and not self.config.open and \
                not bearer_ok(headers.get("authorization"), self.config.token):
            refusal = error_response(401, "this device needs its token: open the one-time link stpr-run printed, "
                                          "or send Authorization: Bearer TOKEN (the token is in --serve-token-file)")
        elif method == "POST" and not origin_allowed(headers.get("origin"), host):
            refusal = error_response(403, f"a state change from another page (Origin {headers.get('origin')!r}) "
                                          "is refused")
        cap = self.config.max_upload_bytes if path == "/api/clips" else JSON_BODY_MAX
        length = headers.get("content-length", "")
        if refusal is None and method == "POST" and length.isdigit() and int(length) > cap:
            refusal = error_response(413, f"request body of {int(length)} bytes; the limit is {cap} bytes "
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
            await error_response(413, f"request body over the limit of {cap} bytes (--serve-max-upload-mb for "
                                         "clips)")(scope, receive, send)
