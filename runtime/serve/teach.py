"""Teaching from the page: one job at a time records, learns, removes or undoes.

A job changes what the device serves by writing a new bundle (as `stpr-run --learn` and
`stpr-learn` write it, never over the one in use) and handing it to the bundle watcher,
which swaps it in between two steps. A job is `done` only once the stream predicts with
the new bundle; whatever fails leaves the old one serving and the job `failed` with the
reason in words.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..bundle.class_overlay import check_new_names, default_overlay_path, write_overlay
from ..bundle.load import Bundle, _array, load_bundle
from ..engine.recognizer import Recognizer
from ..errors import LearnError, OverlayError
from ..learn.learn_bundle import MIN_CLIPS, check_learnable, check_request, learn
from ..learn.learn_clips import read_clip, rows_of_clips, window_rows
from ..model.head_sums import load_sums
from .jobs import DONE, FAILED, LEARNING, MAX_NAME_CHARS, MAX_WINDOWS, RECORDING, SWAP_WAIT_S, Job, Refused

log = logging.getLogger(__name__)

_LEARNED_SUFFIX = re.compile(r"-learned-\d{8}-\d{6}(-j\d+)?$")


def _learn(b: Bundle, out: Path | None, adds: dict[str, np.ndarray], removes: list[str]) -> None:
    """`learn_bundle.learn` on the bundle the stream serves: it was verified when it was loaded and
    bundles are never edited, so its hashes are not read again (the new bundle's are)."""
    assert out is not None
    learn(b.path, out, adds, removes, loaded=(b, load_sums(b.path, b.manifest, _array)))


class Teacher:
    """The jobs of one `stpr-run --serve`. `on_step` and `on_event` run in the stream thread;
    `submit_*` in the server's threads; a job's slow part in a thread of its own."""

    def __init__(self, bundle_arg: Path, deliver: Callable[[Path], str], emit: Callable[[dict], Any], *,
                 recognizer_args: dict[str, Any], every: int | None = None) -> None:
        self.bundle_arg = Path(bundle_arg)
        self.deliver = deliver  # hands a written bundle to the watcher; returns a refusal's reason or ""
        self.emit = emit  # puts an event where the page sees it
        self.recognizer_args = recognizer_args  # backend, device, fp16: how clip jobs run the tower
        self.every = every
        self.jobs: dict[str, Job] = {}
        self.active: Job | None = None
        self.history: list[str] = []  # bundles served before each change, for undo
        self.serving: Recognizer | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # --- requests (server threads) ----------------------------------------------------------
    def _begin(self, kind: str, name: str | None, of: int = 0) -> Job:
        with self._lock:
            if self.serving is None:
                raise Refused(409, "the stream has not made its first prediction yet; try again in a moment")
            if self.active is not None and self.active.state in (RECORDING, LEARNING):
                a = self.active
                raise Refused(409, f"busy: job {a.id} ({a.kind} {a.name!r}) is {a.state}"
                                   f"{f' {a.recorded}/{a.of}' if a.state == RECORDING else ''}; wait for it to end")
            job = Job(f"j{next(self._ids)}", kind, name, of=of, state=RECORDING if kind == "learn" else LEARNING)
            self.jobs[job.id] = job
            while len(self.jobs) > 100:  # the page and scripts ask about recent jobs only
                self.jobs.pop(next(iter(self.jobs)))
            self.active = job
        self._emit(job)
        return job

    def _bundle(self) -> Bundle:
        assert self.serving is not None
        return self.serving.bundle

    def check_name(self, name: Any, *, new: bool) -> str:
        """A class name as stpr-classes and stpr-learn take it, checked before anything runs."""
        if not isinstance(name, str):
            raise Refused(400, f"\"name\" must be a string, not {type(name).__name__}")
        if len(name) > MAX_NAME_CHARS:
            raise Refused(400, f"class name of {len(name)} characters; give at most {MAX_NAME_CHARS}")
        rec = self.serving
        assert rec is not None
        zero_shot = rec.zero_shot.names if rec.zero_shot else []
        try:
            if new:
                check_new_names([name], rec.bundle.classes, zero_shot)
            elif name not in rec.bundle.classes:
                raise Refused(404, f"no class {name!r} in the bundle; the classes are listed in /api/status")
        except OverlayError as e:
            raise Refused(400 if "already exists" not in str(e) else 409, str(e)) from None
        return name

    def submit_learn(self, name: Any, windows: Any, replace: Any = True) -> Job:
        """Record `windows` windows of the live stream as `name`, then learn them."""
        if not isinstance(replace, bool):
            raise Refused(400, f"\"replace\" must be true or false, not {replace!r}")
        if not isinstance(windows, int) or isinstance(windows, bool) or not MIN_CLIPS <= windows <= MAX_WINDOWS:
            raise Refused(400, f"\"windows\" is {windows!r}: record between {MIN_CLIPS} (fewer make one window's "
                               f"quirks the class) and {MAX_WINDOWS}")
        self._check_can_learn()
        exists = isinstance(name, str) and name in self._bundle().classes
        if exists and replace:
            raise Refused(409, f"{name!r} is already a class; send \"replace\": false to add examples to it, or "
                               "remove it first")
        self.check_name(name, new=not exists)
        self._check_request({name: windows})
        return self._begin("learn", name, of=windows)

    def submit_clips(self, name: Any, files: list[Path], folder: Path) -> Job:
        """Learn `name` from uploaded clips (saved under names of our own in `folder`, which
        the job deletes when its tower pass is done; a refusal leaves it to the caller)."""
        self._check_can_learn()
        exists = isinstance(name, str) and name in self._bundle().classes
        self.check_name(name, new=not exists)
        unique, seen = [], set()
        for f in files:  # one clip sent twice is one example, not two
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                unique.append(f)
        self._check_request({name: len(unique)})
        T = self._bundle().frames
        for f in unique:  # a clip that does not decode is refused now, before any tower runs
            try:
                read_clip(f, T)
            except LearnError as e:
                raise Refused(400, str(e).replace(str(f), f"upload {unique.index(f) + 1}")) from None
        job = self._begin("clips", name, of=len(unique))
        if len(unique) < len(files):
            job.note = f"{len(files) - len(unique)} of {len(files)} clips were duplicates and count once"
        self._run(job, lambda b: self._learn_clips(b, job, unique, folder))
        return job

    def submit_remove(self, name: Any) -> Job:
        self._check_can_learn()
        rec = self.serving
        assert rec is not None
        if isinstance(name, str) and rec.zero_shot and name in rec.zero_shot.names:
            raise Refused(409, f"{name!r} was added by name; remove it with `stpr-classes remove`")
        self.check_name(name, new=False)
        try:
            check_request(list(self._bundle().classes), {}, [name], MIN_CLIPS)
        except LearnError as e:
            raise Refused(409, str(e)) from None
        job = self._begin("remove", name)
        self._run(job, lambda b: _learn(b, job.out, {}, [name]))
        return job

    def submit_undo(self) -> Job:
        with self._lock:
            if not self.history:
                raise Refused(409, "nothing to undo: no change was made from this page since the start")
        job = self._begin("undo", None)
        with self._lock:
            target = self.history.pop()
        job.out = Path(target)
        threading.Thread(target=self._deliver, args=(job,), daemon=True, name=f"stpr-job-{job.id}").start()
        return job

    def _check_can_learn(self) -> None:
        try:
            check_learnable(self._bundle())
        except LearnError as e:
            raise Refused(409, str(e)) from None

    def _check_request(self, adds: dict[str, int]) -> None:
        try:
            check_request(list(self._bundle().classes), {n: np.zeros((k, 0)) for n, k in adds.items()}, [], MIN_CLIPS)
        except LearnError as e:
            raise Refused(400, str(e)) from None

    # --- the stream's side ------------------------------------------------------------------
    def on_step(self, rec: Recognizer, window: np.ndarray, index: int) -> None:
        """Every full window: record it if a live job wants it; notice a delivered bundle served."""
        self.serving = rec
        job = self.active
        if job is None:
            return
        if job.state == RECORDING:
            if job.last_index is not None and index - job.last_index < (self.every or rec.bundle.frames):
                return
            job.last_index = index
            job.rows.append(window_rows(rec, window[None]))
            job.recorded = len(job.rows)
            if job.recorded == job.of:
                job.state = LEARNING
                rows = np.concatenate(job.rows)
                self._run(job, lambda b: _learn(b, job.out, {job.name: rows}, []))
            self._emit(job)
        elif job.state == LEARNING and job.delivered_at is not None:
            if job.out is not None and os.path.realpath(rec.bundle.path) == os.path.realpath(job.out):
                self._finish(job, DONE)
            elif time.monotonic() - job.delivered_at > SWAP_WAIT_S:
                self._finish(job, FAILED, f"the new bundle was not swapped in within {SWAP_WAIT_S:.0f} s")

    def on_event(self, event: dict) -> None:
        """A refusal of the bundle a job delivered fails the job (the old bundle keeps serving)."""
        job = self.active
        if event.get("event") == "refused" and job is not None and job.out is not None and \
                os.path.realpath(event.get("bundle", "")) == os.path.realpath(job.out):
            self._finish(job, FAILED, f"the new bundle was refused: {event.get('reason')}")

    def status(self) -> dict | None:
        """The running job for the events' `learning` field, in `stpr-run --learn`'s form, so
        the overlay draws it the same way (None when idle)."""
        job = self.active
        if job is None or job.state not in (RECORDING, LEARNING):
            return None
        return {"class": job.name or job.kind, "state": job.state, "recorded": job.recorded, "of": job.of,
                "job": job.id, "kind": job.kind}

    # --- jobs' threads ----------------------------------------------------------------------
    def _out_for(self, b: Bundle, job: Job) -> Path:
        base = _LEARNED_SUFFIX.sub("", b.path.resolve().name)
        return b.path.resolve().parent / f"{base}-learned-{time.strftime('%Y%m%d-%H%M%S')}-{job.id}"

    def _run(self, job: Job, work: Callable[[Bundle], Any]) -> None:
        b = self._bundle()
        job.out = self._out_for(b, job)

        def body() -> None:
            try:
                work(b)
                self._carry_names(b, job.out)
            except Exception as e:  # the stream goes on with the old bundle whatever failed
                self._finish(job, FAILED, str(e) or type(e).__name__)
                return
            self._deliver(job)
        threading.Thread(target=body, daemon=True, name=f"stpr-job-{job.id}").start()

    def _learn_clips(self, b: Bundle, job: Job, files: list[Path], folder: Path) -> None:
        def progress(done: int, total: int) -> None:
            job.recorded = done
            self._emit(job)
        try:
            with Recognizer(b, **self.recognizer_args) as rec:
                rows = rows_of_clips(rec, files, progress)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        _learn(b, job.out, {job.name: rows}, [])

    def _carry_names(self, b: Bundle, out: Path | None) -> None:
        """Classes added by name go on with the new bundle (its manifest hash is new)."""
        rec = self.serving
        if out is None or rec is None or not rec.zero_shot or not rec.zero_shot.names:
            return
        new = load_bundle(out)
        names = [n for n in rec.zero_shot.names if n not in new.classes]
        if names:
            write_overlay(default_overlay_path(out), new.manifest, names)

    def _deliver(self, job: Job) -> None:
        assert job.out is not None
        previous = str(self._bundle().path)
        reason = self.deliver(job.out)
        if reason:
            self._finish(job, FAILED, f"the new bundle was refused: {reason}")
            return
        job.previous, job.delivered_at = previous, time.monotonic()

    def _finish(self, job: Job, state: str, error: str = "") -> None:
        with self._lock:
            if job.state in (DONE, FAILED):
                return
            job.state, job.error = state, error
            if state == DONE and job.kind != "undo" and job.previous:
                self.history.append(job.previous)
            if self.active is job:
                self.active = None
        if state == FAILED:
            log.warning("job %s (%s %r) failed: %s; the old bundle keeps serving", job.id, job.kind, job.name, error)
        else:
            log.info("job %s (%s %r) done: serving %s", job.id, job.kind, job.name, job.out)
        self._emit(job)

    def _emit(self, job: Job) -> None:
        self.emit({"event": "job", **job.public()})
