#!/usr/bin/env python3
"""The web app's cost to the stream, its lag, and the time to teach: prints JSON.

Runs `stpr-run --serve` as a child process on this machine (loopback only) and measures:
  - throughput: the stream's predictions per second on a looping video file (as fast as
    the model goes) with --serve and 4 viewers pulling frames and events as the page does,
    against the same run without --serve; runs alternate, and each rate is taken over the
    steady part of the run (from --jsonl timestamps, the first seconds left out);
  - the same on a live 30 fps MJPEG source (a camera), where the rate is the camera's and
    the cost shows as dropped frames;
  - lag, capture to page: for each frame a viewer gets, the device's age of the frame when
    sent (capture to send, X-Frame-Age-Ms) plus the request's round trip and the JPEG's
    decoding here (an upper bound of what a browser on this machine sees), p50/p95, on the
    live source with 1 and 4 viewers;
  - teach: the time from the end of the recording (the job turns `learning`) to the new
    class served (`done`), over --teach-runs runs; and the recording time for the record.
Goals (issue 20): throughput ratio >= 0.95, lag p95 <= 250 ms, teach <= 5 s on the demo.

    stpr-train --out runs/demo && stpr-export runs/demo --out bundles/demo
    python scripts/bench/bench_serve.py --bundle bundles/demo [--seconds 12] [--repeats 3]
Takes about 4 minutes on 2 CPU cores with the defaults.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from live_server import MjpegServer  # noqa: E402 (the tests' loopback MJPEG camera)

SERVING = re.compile(r"serving http://[^:/]+:(\d+)/")


def _source_frames(size: int, n: int = 64) -> list[np.ndarray]:
    """Moving shapes (the demo's kind of input) at `size` px, BGR."""
    from stpr.runtime.model.sampling import centre_indices  # noqa: F401 (stpr is importable: fail early)

    frames = []
    for i in range(n):
        img = np.full((size, size, 3), 40, np.uint8)
        x = int((i % 32) / 32 * size)
        cv2.circle(img, (x, size // 2), size // 8, (230, 230, 230), -1)
        frames.append(img)
    return frames


def _video(path: Path, frames: list[np.ndarray]) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, frames[0].shape[1::-1])
    for f in frames:
        out.write(f)
    out.release()
    return path


class Run:
    """One stpr-run child; with `serve`, waits for its port."""

    def __init__(self, args: list[str], serve: bool) -> None:
        child = "import sys; from stpr.runtime.entry import main; sys.argv[0] = 'stpr-run'; main()"
        cmd = [sys.executable, "-c", child, *args, "--headless"]
        if serve:
            cmd += ["--serve", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port, self.lines, ready = None, [], threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if (m := SERVING.search(line)) is not None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()
        threading.Thread(target=read, daemon=True).start()
        if serve and (not ready.wait(120) or self.port is None):
            raise RuntimeError("stpr-run --serve did not start:\n" + "".join(self.lines[-20:]))

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def post(self, path: str, body: dict) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


class Viewers:
    """`n` page-like viewers: each pulls frames with ?after= (and records the lag) and reads
    the event stream, until stopped."""

    def __init__(self, run: Run, n: int) -> None:
        self.run, self.stop_flag, self.lags, self.frames = run, threading.Event(), [], 0
        self.threads = [threading.Thread(target=self._frames, daemon=True) for _ in range(n)]
        self.threads += [threading.Thread(target=self._events, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _frames(self) -> None:
        seq = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=10)
        while not self.stop_flag.is_set():
            try:
                t0 = time.perf_counter()
                conn.request("GET", f"/api/frame.jpg?after={seq}")
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    continue
                cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)  # as the page decodes it
                self.lags.append(float(r.getheader("X-Frame-Age-Ms")) + 1000 * (time.perf_counter() - t0))
                seq = int(r.getheader("X-Frame-Seq"))
                self.frames += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=10)
        conn.close()

    def _events(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=10)
        try:
            conn.request("GET", "/api/events/stream?after=0")
            r = conn.getresponse()
            while not self.stop_flag.is_set():
                if not r.read1(65536):
                    break
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)


def _steady_rate(jsonl: Path, skip_s: float) -> float:
    times = [e["time"] for e in map(json.loads, jsonl.read_text().splitlines()) if "top" in e]
    times = [t for t in times if t >= skip_s]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


def _dropped(lines: list[str]) -> int:
    m = [re.search(r"dropped (\d+)", ln) for ln in lines]
    return next((int(x.group(1)) for x in reversed(m) if x), -1)


def throughput(label: str, bundle: Path, source: list[str], seconds: float, repeats: int, tmp: Path,
               viewers: int) -> dict:
    rates: dict[str, list[float]] = {"plain": [], "serve": []}
    drops: dict[str, list[int]] = {"plain": [], "serve": []}
    ratios = []
    for r in range(repeats):
        pair = {}
        for kind in (("plain", "serve") if r % 2 == 0 else ("serve", "plain")):
            jsonl = tmp / f"{label}-{kind}-{r}.jsonl"  # --jsonl appends: one file per run
            run = Run(["--bundle", str(bundle), *source, "--jsonl", str(jsonl)], serve=kind == "serve")
            v = Viewers(run, viewers) if kind == "serve" else None
            time.sleep(seconds)
            if v is not None:
                v.stop()
            if run.stop() not in (0, 143):
                raise RuntimeError("stpr-run failed:\n" + "".join(run.lines[-20:]))
            pair[kind] = _steady_rate(jsonl, skip_s=2.0)
            rates[kind].append(pair[kind])
            drops[kind].append(_dropped(run.lines))
        ratios.append(pair["serve"] / pair["plain"])
    return {"predictions_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "dropped_frames": drops, "ratio_serve_over_plain": [round(x, 3) for x in ratios],
            "ratio_mean": round(statistics.mean(ratios), 3),
            "ratio_std": round(statistics.stdev(ratios), 3) if len(ratios) > 1 else 0.0}


def lag(bundle: Path, url: str, seconds: float, viewers: int) -> dict:
    run = Run(["--bundle", str(bundle), url], serve=True)
    time.sleep(2.0)
    v = Viewers(run, viewers)
    time.sleep(seconds)
    v.stop()
    run.stop()
    lags = np.array(v.lags)
    return {"viewers": viewers, "frames_received": int(len(lags)),
            "lag_ms_p50": round(float(np.percentile(lags, 50)), 1),
            "lag_ms_p95": round(float(np.percentile(lags, 95)), 1)}


def teach(bundle: Path, url: str, runs: int, windows: int) -> dict:
    learn_s, record_s, named, flagged = [], [], [], []
    for k in range(runs):
        run = Run(["--bundle", str(bundle), url], serve=True)
        try:
            while not any("top" in e for e in json.loads(run.get("/api/events?after=0")[2])["events"]):
                time.sleep(0.2)  # the first prediction: the stream is up
            t0 = time.perf_counter()
            job = run.post("/api/learn", {"name": f"bench action {k}", "windows": windows})["job"]
            t_learning = t_done = None
            while t_done is None:
                state = json.loads(run.get(f"/api/jobs/{job}")[2])["state"]
                now = time.perf_counter()
                if state == "learning" and t_learning is None:
                    t_learning = now
                if state in ("done", "failed"):
                    if state == "failed":
                        raise RuntimeError(json.loads(run.get(f"/api/jobs/{job}")[2])["error"])
                    t_learning = t_learning or now
                    t_done = now
                time.sleep(0.01)
            record_s.append(t_learning - t0)
            learn_s.append(t_done - t_learning)
            last = json.loads(run.get("/api/events?after=0")[2])["last"]
            time.sleep(3.0)  # predictions on the taught source, with the new bundle
            after = [e for e in json.loads(run.get(f"/api/events?after={last}")[2])["events"] if "top" in e]
            named.append(float(np.mean([e["top"][0][0] == f"bench action {k}" for e in after])))
            flagged.append(float(np.mean([bool(e.get("unknown")) for e in after
                                          if e["top"][0][0] == f"bench action {k}"])) if any(
                e["top"][0][0] == f"bench action {k}" for e in after) else float("nan"))
        finally:
            run.stop()
    return {"runs": runs, "windows": windows, "learn_to_served_s": [round(x, 2) for x in learn_s],
            "learn_to_served_mean_s": round(statistics.mean(learn_s), 2),
            "learn_to_served_std_s": round(statistics.stdev(learn_s), 2) if runs > 1 else 0.0,
            "recording_s": [round(x, 2) for x in record_s],
            # the next 3 s on the taught source: the share whose top class is the new one, and of
            # those the share the open-set score still calls unknown (its threshold is the export's)
            "taught_top1_share": [round(x, 3) for x in named], "taught_flagged_unknown_share": [round(x, 3)
                                                                                           for x in flagged]}


EPILOG = """Prints one JSON object: throughput with and without --serve, lag p50/p95 and the time to teach.
Takes about 4 minutes on this machine (2 CPU cores) with the defaults."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=EPILOG)
    ap.add_argument("--bundle", type=Path, required=True, help="A head-alone bundle (stpr-export of the demo).")
    ap.add_argument("--seconds", type=float, default=12.0, help="Length of each throughput and lag run.")
    ap.add_argument("--repeats", type=int, default=3, help="Throughput pairs (with and without --serve).")
    ap.add_argument("--viewers", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="Source frame size in pixels.")
    ap.add_argument("--teach-runs", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["file", "live", "lag", "teach"],
                    choices=["file", "live", "lag", "teach"], help="What to measure.")
    args = ap.parse_args()
    frames = _source_frames(args.size)
    out: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version(), "load_avg_at_start": os.getloadavg()},
                 "bundle": str(args.bundle), "source_px": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        video = _video(Path(tmp) / "loop.avi", frames)
        if "file" in args.parts:
            out["throughput_file"] = throughput("file", args.bundle, ["--video", str(video), "--loop"],
                                                args.seconds, args.repeats, Path(tmp), args.viewers)
        with MjpegServer(frames, fps=30) as cam:
            if "live" in args.parts:
                out["throughput_live_30fps"] = throughput("live", args.bundle, [cam.url], args.seconds, args.repeats,
                                                          Path(tmp), args.viewers)
            if "lag" in args.parts:
                out["lag"] = [lag(args.bundle, cam.url, args.seconds, n) for n in (1, args.viewers)]
            if "teach" in args.parts:
                out["teach"] = teach(args.bundle, cam.url, args.teach_runs, 8)
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
