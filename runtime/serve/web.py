"""The Starlette app of `stpr-run --serve`: the page, its static files and the JSON API.

Every handler reads the `Hub` and the `Teacher`; none touches the stream. Blocking work
(JPEG encoding, reading uploaded clips) runs in the thread pool, waiting is async.
"""
from __future__ import annotations

from importlib import resources
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from .api_teach import teach_routes
from .api_watch import watch_routes
from .guard import Guard, ServeConfig, error_response
from .hub import Hub
from .jobs import Refused
from .security import Logins
from .teach import Teacher

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
CSP = "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; connect-src 'self'"


def make_app(hub: Hub, teacher: Teacher, config: ServeConfig, logins: Logins,
             source_info: Callable[[], dict[str, Any]]) -> ASGIApp:
    """The ASGI app; `source_info()` gives the source's fixed description (kind, name)."""
    static = {name: resources.files(__package__).joinpath("static", name).read_bytes() for name in STATIC}

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

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return error_response(exc.status, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        return Response(str(exc.detail), status_code=exc.status_code, media_type="text/plain")

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [Route("/", page("index.html")), Route("/favicon.ico", no_icon), Route("/index.html", page("index.html")),
              Route("/app.js", page("app.js")), Route("/style.css", page("style.css")),
              Route("/login/{code}", login),
              *watch_routes(hub, teacher, config, source_info), *teach_routes(teacher, config)]
    app = Starlette(routes=routes, exception_handlers={Refused: refused, HTTPException: http_error})
    return Guard(app, config)
