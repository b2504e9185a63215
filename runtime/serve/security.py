"""Who may talk to `stpr-run --serve`: the bind address, the token, the one-time login link.

Bound to loopback, only this machine can connect, so the API is open (a browser page from
another site still cannot drive it: the Host and Origin checks below). Bound to any other
address, or to loopback with a token given (behind a TLS proxy), every /api request
carries `Authorization: Bearer TOKEN`, compared in constant time. The token lives in a
0600 file so a restart keeps it and scripts can read it; the page gets it from a one-time
login link printed at start, so the token itself never sits in a URL a browser keeps in
its history.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
import threading
from pathlib import Path
from urllib.parse import urlsplit

MIN_TOKEN_CHARS = 16  # a shorter token is guessable over a network
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def parse_bind(value: str) -> tuple[str, int]:
    """`[HOST:]PORT` (HOST may be `[v6]`) -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--serve {value!r}: give [HOST:]PORT with a port from 0 to 65535, e.g. 8080 or "
                         "0.0.0.0:8080")
    return host or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_token_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "stpr" / "serve-token"


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only, by temp + rename (a crash leaves
    the old file or none, never half a token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_token(token: str, source: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError(f"{source}: a token needs at least {MIN_TOKEN_CHARS} printable characters and no spaces")
    return token


def load_or_make_token(given: str | None, path: Path) -> tuple[str, bool]:
    """(token, made now). A given token is used as it is; else the file's, else a new one
    written to the file. A file others can read is refused: the token would not be secret."""
    if given is not None:
        return check_token(given, "--serve-token"), False
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ValueError(f"--serve-token-file {str(path)!r} is readable by others (mode {mode:o}); run "
                             f"`chmod 600 {path}` or delete it to make a new token")
        return check_token(path.read_text().strip(), f"--serve-token-file {str(path)!r}"), False
    token = secrets.token_urlsafe(32)
    _write_private(path, token)
    return token, True


def bearer_ok(header: str | None, token: str) -> bool:
    """`Authorization: Bearer TOKEN`, compared in constant time."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())


def host_name(host_header: str) -> str:
    """The host part of a Host header (`[::1]:8080` -> `::1`)."""
    return urlsplit(f"//{host_header}").hostname or ""


def host_allowed(host_header: str | None, open_loopback: bool) -> bool:
    """On a loopback bind with no token, a Host that names another machine is a
    DNS-rebinding page reaching in through the browser: refuse it. (With a token the
    token guards, and a TLS proxy in front may pass its own Host.)"""
    if not open_loopback:
        return True
    return bool(host_header) and is_loopback(host_name(host_header))


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """A state change from a browser must come from our own page: the Origin's host:port
    is the Host asked for. No Origin (curl, scripts) is no browser page, so allowed."""
    if origin is None:
        return True
    return bool(host_header) and urlsplit(origin).netloc.lower() == host_header.lower()


class Logins:
    """One-time login codes: the link printed at start works once, then says so."""

    def __init__(self) -> None:
        self._codes: set[str] = set()
        self._lock = threading.Lock()

    def make(self) -> str:
        code = secrets.token_urlsafe(18)
        with self._lock:
            self._codes.add(code)
        return code

    def use(self, code: str) -> bool:
        with self._lock:
            for known in list(self._codes):
                if hmac.compare_digest(known.encode(), code.encode()):
                    self._codes.discard(known)
                    return True
        return False
