"""Run `stpr-run --serve` in a child process (torch made unimportable) and talk to it over HTTP."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_SERVING = re.compile(r"serving http://[^:/]+:(\d+)/")
_LOGIN = re.compile(r"(/login/[A-Za-z0-9_-]+)")

CHILD = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails: the device has none
         "from stpr.runtime.entry import main\n"
         "sys.argv = ['stpr-run'] + sys.argv[1:]\n"
         "main()\n")


class Served:
    """`stpr-run ARGS --serve HOST:0` in a child process; `port` once it serves."""

    def __init__(self, args: list[str], bind: str = "127.0.0.1:0", env: dict[str, str] | None = None,
                 timeout: float = 120) -> None:
        self.args = [str(a) for a in args] + ["--serve", bind, "--headless"]
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.port: int | None = None
        self.login: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.port is None:
            self.stop()
            raise AssertionError("stpr-run --serve did not start:\n" + "\n".join(self.lines[-30:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if (m := _LOGIN.search(line)) is not None:
                self.login = m.group(1)
            if (m := _SERVING.search(line)) is not None:
                self.port = int(m.group(1))
                if "/login/" in line or "loopback" in line:
                    self._ready.set()
        self._ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, headers, body = self.request("GET", path, **kw)
        return status, json.loads(body) if headers.get("content-type", "").startswith("application/json") else body

    def post(self, path: str, obj: Any = None, raw: bytes | None = None, **kw: Any) -> tuple[int, Any]:
        body = raw if raw is not None else json.dumps(obj).encode()
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        status, h, data = self.request("POST", path, body=body, headers=headers, **kw)
        return status, json.loads(data) if h.get("content-type", "").startswith("application/json") else data

    def wait_job(self, job: str, timeout: float = 120, **kw: Any) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get(f"/api/jobs/{job}", **kw)
            assert status == 200, body
            if body["state"] in ("done", "failed"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"job {job} did not end in {timeout} s: {body}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("stpr-run --serve did not exit after the signal:\n" + self.output)

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body with text `fields` and `files` (filename, bytes) as "files"."""
    boundary = "stprtestboundary7d3f"
    parts = []
    for k, v in fields.items():
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    for name, data in files:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                     "Content-Type: video/x-msvideo\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def top1_counts(events: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in events:
        if "top" in e:
            counts[e["top"][0][0]] = counts.get(e["top"][0][0], 0) + 1
    return counts


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
