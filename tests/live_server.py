"""A loopback MJPEG-over-HTTP stream (what many IP cameras serve), in pure Python, for the
live-stream tests: no ffmpeg binary needed. Serves on 127.0.0.1 only."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

_BOUNDARY = "stprframe"


class MjpegServer:
    """`url` streams `frames` in a loop at `fps` to every client; `stall()` keeps the
    connections open and sends nothing (a camera that froze), `resume()` goes on."""

    def __init__(self, frames: list[np.ndarray], fps: float = 25.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.period = 1.0 / fps
        self.flowing = threading.Event()
        self.flowing.set()
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={_BOUNDARY}")
                self.end_headers()
                i = 0
                try:
                    while not server.closing.is_set():
                        if not server.flowing.wait(0.1):
                            continue
                        jpg = server.jpegs[i % len(server.jpegs)]
                        self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                        self.wfile.flush()
                        i += 1
                        time.sleep(server.period)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()
