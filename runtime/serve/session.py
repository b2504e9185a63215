"""One `stpr-run --serve`: what the command line builds before the stream starts, and what
it tears down after: the token, the socket, the hub, the teacher and the server."""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from ..bundle.publish import publish
from ..engine.recognizer import Recognizer
from ..engine.watch import BundleWatcher
from ..errors import ServeError
from .hub import Hub
from .security import Logins, default_token_file, is_loopback, load_or_make_token, parse_bind
from .server import WebServer, bind, import_web
from .teach import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    bind: str
    token: str | None
    token_file: Path | None
    max_upload_mb: float
    view_fps: float = 15.0
    max_upload_files: int = 64


class ServedEvents:
    """The event log, with every event also handed to the page and the teacher."""

    def __init__(self, log_: Any, session: "ServeSession") -> None:
        self.log, self.session = log_, session

    def write(self, event: dict) -> None:
        self.log.write(event)  # the file first: it is the record, the page only a view
        self.session.hub.put_event(event)
        self.session.teacher.on_event(event)

    def close(self) -> None:
        self.log.close()


class ServeSession:
    def __init__(self, opts: ServeOptions, bundle_arg: Path, watcher: BundleWatcher, watch_link: bool,
                 recognizer_args: dict[str, Any]) -> None:
        import_web()
        try:
            host, port = parse_bind(opts.bind)
            # A token is needed off loopback, and on loopback when one is given (behind a TLS proxy
            # on the same device, where every client arrives from 127.0.0.1).
            self.open = is_loopback(host) and opts.token is None and opts.token_file is None
            self.token, self.token_made = ("", False) if self.open else \
                load_or_make_token(opts.token, opts.token_file or default_token_file())
        except (ValueError, OSError) as e:
            raise ServeError(str(e)) from None
        self.opts, self.host = opts, host
        self.token_file = opts.token_file or default_token_file()
        self.hub = Hub()
        self.logins = Logins()

        def deliver(folder: Path) -> str:
            if watch_link:  # the link is switched, so a restart serves the new bundle too
                try:
                    publish(folder, bundle_arg)
                except (OSError, ValueError) as e:
                    return str(e)
                return ""
            return watcher.offer_folder(folder)
        self.teacher = Teacher(bundle_arg, deliver, self.hub.put_event, recognizer_args=recognizer_args)
        self.sock = bind(host, port)
        self.server: WebServer | None = None

    def events(self, log_: Any) -> ServedEvents:
        return ServedEvents(log_, self)

    def start(self, rec: Recognizer, source: dict[str, Any], say: Callable[[str], None] = click.echo) -> None:
        """Serve the page; say where, and how to log in when a token is needed."""
        from .guard import ServeConfig
        from .web import make_app

        self.teacher.serving = rec
        config = ServeConfig(self.open, self.token, int(self.opts.max_upload_mb * 2 ** 20),
                             self.opts.max_upload_files, self.opts.view_fps)
        self.server = WebServer(make_app(self.hub, self.teacher, config, self.logins, lambda: source), self.sock)
        self.server.start()
        shown = self.host if self.host not in ("0.0.0.0", "::") else socket.gethostname()
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{self.server.port}"
        if self.open:
            say(f"stpr-run: serving {url}/ (loopback: no token needed)")
            return
        if self.token_made:
            say(f"stpr-run: new API token (printed only now, kept in {str(self.token_file)!r}, mode 600): "
                f"{self.token}")
        else:
            say(f"stpr-run: API token: the one in {str(self.token_file)!r}" if self.opts.token is None
                else "stpr-run: API token: the one given with --serve-token")
        say(f"stpr-run: serving {url}/ to requests with the token; open this link once to log a browser in: "
            f"{url}/login/{self.logins.make()}")

    def stop(self) -> None:
        self.hub.close()
        if self.server is not None:
            self.server.stop()
        else:
            self.sock.close()
