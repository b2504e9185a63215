"""uvicorn in a thread beside the stream: started before the first frame, stopped with it.

We bind the socket ourselves, so a port in use is one line before anything runs (uvicorn
would log and exit its own thread), and port 0 picks a free one that we can print.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from ..errors import ServeError

STOP_WAIT_S = 5.0  # open event streams get this long to end before the process goes on exiting


def import_web() -> None:
    """Import the web libraries now, so a missing extra is one line before the bundle loads."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ServeError(f"--serve needs the web app's libraries ({e.name} is missing): "
                               "pip install 'stpr[serve]'") from None
    try:
        import multipart  # noqa: F401  (python-multipart: Starlette's form parser, for clip uploads)
    except ImportError:
        raise ServeError("--serve needs python-multipart for clip uploads: pip install 'stpr[serve]'") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a `ServeError` naming the problem and the fix."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"--serve host {host!r} does not resolve ({e.strerror}); give an address of this "
                               "device, 0.0.0.0 for all, or 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise ServeError(f"--serve cannot listen on {host}:{port}: {e.strerror}; choose another port "
                               "(0 picks a free one)") from None
    sock.setblocking(False)
    return sock


class WebServer:
    """Runs an ASGI app on `sock` in a daemon thread."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", ws="none",
                                http="h11", loop="asyncio", timeout_graceful_shutdown=2, server_header=False,
                                log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="stpr-serve")

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self, wait: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + wait
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise ServeError("the web server did not start; see the lines above")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_WAIT_S)
        if self.thread.is_alive():
            logging.getLogger(__name__).warning("the web server did not stop within %.0f s; exiting anyway",
                                                STOP_WAIT_S)
        self.sock.close()
