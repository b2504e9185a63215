"""`stpr-run --serve`: the JSON API, its refusals, its security rules and its reliability.

Each server here is a real `stpr-run` child process with torch unimportable, spoken to over
HTTP on 127.0.0.1 (docs/web.md)."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import CHILD, Served, multipart, read_jsonl, top1_counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(head_demo, tmp_path_factory):
    bundle, source, uploads = head_demo
    events = tmp_path_factory.mktemp("ev") / "ev.jsonl"
    with Served(["--bundle", bundle, "--video", source, "--loop", "--jsonl", events,
                 "--serve-max-upload-mb", "16"]) as s:
        s.events = events
        yield s


def _wait_predictions(s: Served, n: int = 3, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = s.get("/api/events?after=0")
        got = [e for e in body["events"] if "top" in e]
        if len(got) >= n:
            return got
        time.sleep(0.2)
    raise AssertionError("no predictions:\n" + s.output)


def test_status_names_the_bundle_its_classes_and_the_source(served, head_demo):
    _wait_predictions(served)
    status, body = served.get("/api/status")
    assert status == 200
    manifest = json.loads((head_demo[0] / "manifest.json").read_text())
    assert body["bundle"]["sha256"] == manifest["manifest_sha256"]
    classes = body["bundle"]["classes"]
    assert [c["name"] for c in classes] == manifest["classes"]
    assert {c["origin"] for c in classes} == {"trained"}
    assert [c["examples"] for c in classes] == manifest["head"]["sums"]["counts"]
    assert body["source"]["kind"] == "video" and body["source"]["state"] == "live"
    assert body["fps"] > 0 and body["lag_ms"] is not None and body["job"] is None and body["undo"] is False


def test_events_come_with_a_seq_and_after_filters_them(served):
    _wait_predictions(served)
    _, body = served.get("/api/events?after=0")
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and body["last"] >= seqs[-1]
    mid = seqs[len(seqs) // 2]
    _, later = served.get(f"/api/events?after={mid}")
    assert later["events"] and all(e["seq"] > mid for e in later["events"])
    assert {"top", "frame", "latency_ms"} <= set(next(e for e in later["events"] if "top" in e))


def test_event_stream_pushes_events_with_ids(served):
    conn = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    conn.sendall(b"GET /api/events/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    deadline = time.monotonic() + 20
    while data.count(b"\nid: ") < 3 and time.monotonic() < deadline:
        data += conn.recv(65536)
    conn.close()
    head, _, stream = data.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"text/event-stream" in head
    blocks = [b for b in stream.split(b"\n\n") if b"data: " in b]
    events = [json.loads(b.split(b"data: ", 1)[1].split(b"\r\n")[0]) for b in blocks[:3]]
    assert all("seq" in e for e in events)


def test_frame_is_a_jpeg_and_after_gives_a_newer_one(served):
    _wait_predictions(served)
    status, headers, body = served.request("GET", "/api/frame.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    seq = int(headers["x-frame-seq"])
    assert float(headers["x-frame-age-ms"]) >= 0
    status, headers, body = served.request("GET", f"/api/frame.jpg?after={seq}")
    assert status == 200 and int(headers["x-frame-seq"]) > seq and body[:2] == b"\xff\xd8"


NEWLINE = "wave\nhello"


@pytest.mark.parametrize("method,path,body,status,words", [
    ("POST", "/api/learn", b"{not json", 400, "not JSON"),
    ("POST", "/api/learn", b"[1, 2]", 400, "JSON object"),
    ("POST", "/api/learn", b'{"windows": 8}', 400, "no \"name\""),
    ("POST", "/api/learn", json.dumps({"name": NEWLINE, "windows": 8}).encode(), 400, "control"),
    ("POST", "/api/learn", json.dumps({"name": "", "windows": 8}).encode(), 400, "empty"),
    ("POST", "/api/learn", json.dumps({"name": "wave \U0001F44B", "windows": 8}).encode(), 400, "emoji"),
    ("POST", "/api/learn", json.dumps({"name": "x" * 65, "windows": 8}).encode(), 400, "at most 64"),
    ("POST", "/api/learn", b'{"name": "wave", "windows": 2}', 400, "between 4"),
    ("POST", "/api/learn", b'{"name": "wave", "windows": "8"}', 400, "\"windows\""),
    ("POST", "/api/learn", b'{"name": "wave", "windows": 8, "path": "/etc"}', 400, "unknown field"),
    ("POST", "/api/learn", b'{"name": "wave", "replace": "no"}', 400, "\"replace\""),
    ("POST", "/api/learn", b'{"name": "circle_moving_right", "windows": 8}', 409, "already a class"),
    ("POST", "/api/learn", b'{"name": "Circle Moving-Right", "windows": 8}', 409, "already exists"),
    ("POST", "/api/remove", b'{"name": "no such action"}', 404, "no class"),
    ("POST", "/api/remove", b'{"name": 7}', 400, "string"),
    ("POST", "/api/undo", b"{}", 409, "nothing to undo"),
    ("GET", "/api/jobs/j999", None, 404, "no job"),
    ("GET", "/api/learn", None, 405, "Method Not Allowed"),
    ("GET", "/api/nothing-here", None, 404, "Not Found"),
    ("GET", "/api/events?after=-3", None, 400, "whole number"),
])
def test_every_refusal_is_one_json_line_and_the_stream_goes_on(served, method, path, body, status, words):
    before = served.get("/api/status")[1]["fps"]
    got, headers, data = served.request(method, path, body=body, headers={"Content-Type": "application/json"})
    assert got == status, data
    error = json.loads(data)["error"]
    assert words in error and "\n" not in error
    assert served.proc.poll() is None and before > 0


def test_a_foreign_page_or_host_is_refused(served):
    status, _, data = served.request("POST", "/api/undo", body=b"{}", headers={"Origin": "http://evil.example"})
    assert status == 403 and b"another page" in data
    status, _, data = served.request("GET", "/api/status", headers={"Host": "evil.example:80"})
    assert status == 403 and b"loopback" in data  # a DNS-rebinding page cannot read the camera
    status, _, _ = served.request("POST", "/api/undo", body=b"{}",
                                  headers={"Origin": f"http://127.0.0.1:{served.port}"})
    assert status == 409  # our own page passes the check (and is told there is nothing to undo)


def test_uploads_are_capped_checked_and_never_become_paths(served, head_demo, tmp_path):
    bundle = head_demo[0]
    siblings = sorted(p.name for p in bundle.parent.iterdir())
    big, ctype = multipart({"name": "big one"}, [("a.mp4", os.urandom(20 * 2 ** 20))])
    status, _, data = served.request("POST", "/api/clips", body=big, headers={"Content-Type": ctype})
    assert status == 413 and b"limit" in data
    body, ctype = multipart({"name": "text file"}, [("notes.txt", b"hello")])
    status, _, data = served.request("POST", "/api/clips", body=body, headers={"Content-Type": ctype})
    assert status == 400 and b"not a video file" in data
    evil = "../../../../" + str(tmp_path / "evil.avi").lstrip("/")
    evil_name = "../../../../../../tmp/stpr-evil-name"
    body, ctype = multipart({"name": evil_name}, [(evil, os.urandom(4096)) for _ in range(4)])
    status, _, data = served.request("POST", "/api/clips", body=body, headers={"Content-Type": ctype})
    assert status == 400 and b"upload 1" in data  # refused as a clip that does not decode, by its number
    assert list(tmp_path.iterdir()) == []  # neither the file name nor the class name became a path
    assert not Path("/tmp/stpr-evil-name").exists()
    body, ctype = multipart({"name": "no clips"}, [])
    status, _, data = served.request("POST", "/api/clips", body=body, headers={"Content-Type": ctype})
    assert status == 400 and b"no clips" in data
    assert sorted(p.name for p in bundle.parent.iterdir()) == siblings  # no bundle written by a refusal
    assert served.proc.poll() is None


def test_a_client_that_leaves_mid_upload_or_stops_reading_changes_nothing(served):
    _wait_predictions(served)
    n0 = served.get("/api/events?after=0")[1]["last"]
    uploads = set(Path("/tmp").glob("stpr-upload-*"))
    half = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    half.sendall(b"POST /api/clips HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
                 b"Content-Length: 5000000\r\n\r\n--zz\r\nContent-Disposition: form-data; name=\"files\"; "
                 b"filename=\"a.mp4\"\r\n\r\n" + b"\0" * 500_000)
    stuck = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /api/events/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # then never reads
    time.sleep(1.0)
    half.close()  # gone mid-upload
    time.sleep(2.0)
    last = served.get("/api/events?after=0")[1]["last"]
    assert last > n0 + 10  # predictions went on
    stuck.close()
    assert served.get("/api/status")[0] == 200
    assert set(Path("/tmp").glob("stpr-upload-*")) <= uploads  # the cut upload left no folder


def test_teach_from_the_api_with_eight_viewers(head_demo, tmp_path):
    """Record, learn and swap while eight viewers pull frames; then remove (exact), undo, and
    learn from uploaded clips; SIGTERM ends it with 143 and whole files."""
    bundle, source, uploads = head_demo
    original = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    events = tmp_path / "ev.jsonl"
    s = Served(["--bundle", bundle, "--video", source, "--loop", "--jsonl", events])
    try:
        _wait_predictions(s)
        stop = threading.Event()
        frames_seen = [0] * 8

        def viewer(k: int) -> None:
            seq = 0
            while not stop.is_set():
                status, headers, _ = s.request("GET", f"/api/frame.jpg?after={seq}")
                if status == 200:
                    seq = int(headers["x-frame-seq"])
                    frames_seen[k] += 1
        viewers = [threading.Thread(target=viewer, args=(k,), daemon=True) for k in range(8)]
        for v in viewers:
            v.start()
        status, job = s.post("/api/learn", {"name": "cross right", "windows": 8})
        assert status == 202 and job["state"] == "recording" and job["of"] == 8
        status, busy = s.post("/api/learn", {"name": "another", "windows": 8})
        assert status == 409 and "busy" in busy["error"]
        done = s.wait_job(job["job"])
        stop.set()
        for v in viewers:
            v.join(10)
        assert done["state"] == "done", done
        assert min(frames_seen) >= 5  # every viewer kept getting frames while it learned
        classes = {c["name"]: c for c in s.get("/api/status")[1]["bundle"]["classes"]}
        assert classes["cross right"]["origin"] == "device" and classes["cross right"]["examples"] == 8
        learned = Path(done["bundle"])
        assert learned.parent == bundle.parent and learned != bundle
        assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == original  # never edited

        swap = s.get("/api/events?after=0")[1]
        after_swap = [e for e in read_jsonl(events) if "top" in e][-200:]
        counts = top1_counts(after_swap)
        assert max(counts, key=counts.get) == "cross right", counts  # the source is now named

        status, job = s.post("/api/remove", {"name": "cross right"})
        assert status == 202
        assert s.wait_job(job["job"])["state"] == "done"
        names = [c["name"] for c in s.get("/api/status")[1]["bundle"]["classes"]]
        assert "cross right" not in names
        served_now = Path(s.get("/api/status")[1]["bundle"]["path"])
        w0, w1 = np.load(bundle / "head_weights.npy"), np.load(served_now / "head_weights.npy")
        assert w0.shape == w1.shape and np.abs(w1 - w0).max() <= 1e-5 * np.abs(w0).max()  # exactly undone

        status, job = s.post("/api/undo", {})
        assert status == 202 and s.wait_job(job["job"])["state"] == "done"
        assert s.get("/api/status")[1]["bundle"]["path"] == str(learned)  # the remove is undone

        files = [(f"../{p.name}", p.read_bytes()) for p in uploads] + [("again.avi", uploads[0].read_bytes())]
        body, ctype = multipart({"name": "cross left"}, files)
        status, job = s.post("/api/clips", raw=body, headers={"Content-Type": ctype})
        assert status == 202, job
        done = s.wait_job(job["job"])
        assert done["state"] == "done" and "1 of 5 clips were duplicates" in done["note"]
        classes = {c["name"]: c for c in s.get("/api/status")[1]["bundle"]["classes"]}
        assert classes["cross left"] == {"name": "cross left", "origin": "device", "examples": 4}
        assert classes["cross right"]["origin"] == "device"
        assert swap["last"] > 0
        kinds = [j["kind"] for j in s.get("/api/jobs")[1]["jobs"]]
        assert kinds == ["learn", "remove", "undo", "clips"]
    finally:
        code = s.stop()
    assert code == 143, s.output
    lines = read_jsonl(events)  # every line whole JSON
    assert sum(1 for e in lines if e.get("event") == "swap") == 4
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2)  # the server stopped with the stream


def test_off_loopback_every_api_call_needs_the_token(head_demo, tmp_path):
    bundle, source, _ = head_demo
    token_file = tmp_path / "cfg" / "token"
    s = Served(["--bundle", bundle, "--video", source, "--loop", "--serve-token-file", token_file], bind="0.0.0.0:0")
    try:
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32
        assert token in s.output and s.output.count(token) == 1  # printed once
        assert s.get("/api/status")[0] == 401
        assert s.get("/api/status", headers={"Authorization": "Bearer " + "x" * len(token)})[0] == 401
        assert s.get("/api/status", headers={"Authorization": token})[0] == 401  # not as a bearer
        assert s.get("/api/status", headers={"Authorization": f"Bearer {token}"})[0] == 200
        status, _, data = s.request("GET", "/")
        assert status == 200 and b"<title>" in data  # the page itself loads, to ask for the token
        assert s.request("POST", "/api/undo", body=b"{}")[0] == 401
        status, headers, _ = s.request("GET", s.login)
        assert status == 303 and headers["location"] == f"/#token={token}"
        assert s.request("GET", s.login)[0] == 410  # one time only
    finally:
        assert s.stop() == 143
    again = Served(["--bundle", bundle, "--video", source, "--loop", "--serve-token-file", token_file],
                   bind="0.0.0.0:0")
    try:
        assert token not in again.output and str(token_file) in again.output  # kept, not printed again
        assert again.get("/api/status", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        again.stop()
    token_file.chmod(0o644)
    res = subprocess.run([sys.executable, "-c", CHILD, "--bundle", str(bundle), "--video", str(source), "--headless",
                          "--serve", "0.0.0.0:0", "--serve-token-file", str(token_file)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "readable by others" in res.stderr and "chmod 600" in res.stderr


def test_loopback_with_a_token_file_asks_for_it_and_takes_a_proxy_host(head_demo, tmp_path):
    """Behind a TLS proxy on the device every client comes from 127.0.0.1: the token guards."""
    bundle, source, _ = head_demo
    token_file = tmp_path / "token"
    s = Served(["--bundle", bundle, "--video", source, "--loop", "--serve-token-file", token_file])
    try:
        token = token_file.read_text().strip()
        assert s.get("/api/status")[0] == 401
        auth = {"Authorization": f"Bearer {token}", "Host": "camera.example"}
        assert s.get("/api/status", headers=auth)[0] == 200  # the proxy's Host passes with the token
        status, _, _ = s.request("POST", "/api/undo", body=b"{}", headers={**auth, "Origin": "https://camera.example"})
        assert status == 409  # the Origin matches the Host the proxy kept
    finally:
        assert s.stop() == 143


@pytest.mark.parametrize("args,code,words", [
    (["--serve", "127.0.0.1:99999"], 2, "port from 0 to 65535"),
    (["--serve", "0", "--clip"], 2, "not go with --clip"),
    (["--serve", "0", "--learn", "x", "--learn-after", "1"], 2, "drop --learn"),
    (["--serve-token", "abcdefghijklmnopq"], 2, "goes with --serve"),
    (["--serve", "0.0.0.0:0", "--serve-token", "short"], 1, "at least 16"),
])
def test_bad_serve_options_are_one_line(head_demo, args, code, words):
    bundle, source, _ = head_demo
    res = subprocess.run([sys.executable, "-c", CHILD, "--bundle", str(bundle), "--video", str(source),
                          "--headless", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == code, res.stderr
    assert words in res.stderr and "Traceback" not in res.stderr


def test_a_port_in_use_and_a_missing_extra_are_one_line(head_demo):
    bundle, source, _ = head_demo
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        res = subprocess.run([sys.executable, "-c", CHILD, "--bundle", str(bundle), "--video", str(source),
                              "--headless", "--serve", str(port)], capture_output=True, text=True, timeout=120)
    finally:
        taken.close()
    assert res.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in res.stderr, res.stderr
    no_web = CHILD.replace("sys.modules['torch'] = None", "sys.modules['torch'] = sys.modules['uvicorn'] = None")
    res = subprocess.run([sys.executable, "-c", no_web, "--bundle", str(bundle), "--video", str(source),
                          "--headless", "--serve", "0"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "pip install 'stpr[serve]'" in res.stderr and "Traceback" not in res.stderr


def test_a_live_source_that_drops_and_returns_shows_in_status(head_demo):
    from live_server import MjpegServer

    from stpr.train.data.synthetic import SyntheticActions
    bundle = head_demo[0]
    test = SyntheticActions("test", clips_per_class=1, seed=1)
    frames = [f[..., ::-1] for f in test.raw_clip(0)]
    with MjpegServer(frames, fps=25) as cam:
        s = Served(["--bundle", bundle, cam.url, "--timeout", "1"])
        try:
            _wait_predictions(s)
            assert s.get("/api/status")[1]["source"]["state"] == "live"
            cam.stall()
            deadline = time.monotonic() + 20
            while s.get("/api/status")[1]["source"]["state"] != "lost" and time.monotonic() < deadline:
                time.sleep(0.2)
            lost = s.get("/api/status")[1]["source"]
            assert lost["state"] == "lost" and lost["error"], lost
            cam.resume()
            deadline = time.monotonic() + 30
            while s.get("/api/status")[1]["source"]["state"] != "live" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert s.get("/api/status")[1]["source"]["state"] == "live"
            states = [e["state"] for e in s.get("/api/events?after=0")[1]["events"] if e.get("event") == "source"]
            assert states[-2:] == ["lost", "live"], states
        finally:
            assert s.stop() == 143


def test_a_job_that_fails_leaves_the_old_bundle_serving(head_demo, tmp_path):
    """The learned bundle's folder name is taken (as by another writer): the job fails in
    words, the stream goes on with the old bundle, and the next job succeeds."""
    bundle, source, _ = head_demo
    import datetime as dt
    s = Served(["--bundle", bundle, "--video", source, "--loop"])
    blockers = []
    try:
        _wait_predictions(s)
        now = dt.datetime.now()
        for k in range(-5, 180):  # every name j1 could take in the next minutes
            stamp = (now + dt.timedelta(seconds=k)).strftime("%Y%m%d-%H%M%S")
            blocker = bundle.parent / f"{bundle.name}-learned-{stamp}-j1"
            blocker.mkdir()
            (blocker / "not-a-bundle.txt").write_text("someone else's folder")
            blockers.append(blocker)
        status, job = s.post("/api/learn", {"name": "cross right", "windows": 4})
        assert status == 202
        failed = s.wait_job(job["job"])
        assert failed["state"] == "failed" and failed["error"] and "\n" not in failed["error"], failed
        body = s.get("/api/status")[1]
        assert body["bundle"]["path"] == str(bundle) and "cross right" not in [c["name"] for c in
                                                                                 body["bundle"]["classes"]]
        last = body and s.get("/api/events?after=0")[1]["last"]
        time.sleep(1.0)
        assert s.get("/api/events?after=0")[1]["last"] > last  # still predicting
        assert all((b / "not-a-bundle.txt").is_file() for b in blockers)  # nothing of theirs touched
        status, job = s.post("/api/learn", {"name": "cross right", "windows": 4})
        assert status == 202 and s.wait_job(job["job"])["state"] == "done"  # j2: a free name
    finally:
        assert s.stop() == 143
        for b in blockers:
            (b / "not-a-bundle.txt").unlink()
            b.rmdir()


def test_with_watch_on_a_link_teaching_switches_the_link(head_demo, tmp_path):
    """With --watch on a published link, the learned bundle is published to the link (a
    restart serves it too) and the watcher swaps it in; undo switches the link back."""
    bundle, source, _ = head_demo
    link = tmp_path / "current"
    link.symlink_to(bundle)
    s = Served(["--bundle", link, "--watch", "--watch-interval", "0.5", "--video", source, "--loop"])
    try:
        _wait_predictions(s)
        status, job = s.post("/api/learn", {"name": "cross right", "windows": 4})
        assert status == 202
        done = s.wait_job(job["job"])
        assert done["state"] == "done", done
        assert link.resolve() == Path(done["bundle"]).resolve()
        status, job = s.post("/api/undo", {})
        assert status == 202 and s.wait_job(job["job"])["state"] == "done"
        assert link.resolve() == bundle.resolve()
    finally:
        assert s.stop() == 143
