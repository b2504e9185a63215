"""`stpr-run --learn NAME`: record the next N windows from the camera as examples of NAME.

The stream already runs the head's tower on every frame, so a recorded window costs no
extra tower pass: its head row `h` comes straight from the ring. Recording starts on a
key in the window (`l`) or after a timer. Windows are taken `every` frames apart (by
default T: consecutive windows share no frame, so they are N examples, not N copies of
one). Once N are in, a thread writes the new bundle with `learn_bundle.learn` (the streaming
goes on meanwhile) and hands it to the watcher, which swaps it in between two steps.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import click
import numpy as np

from ..bundle.bundle_dir import prepare_target
from ..bundle.load import Bundle
from ..bundle.publish import publish
from ..engine.recognizer import Recognizer
from .learn_bundle import MIN_CLIPS, check_learnable, check_request, learn
from .learn_clips import window_rows

if TYPE_CHECKING:
    from ..engine.watch import BundleWatcher

log = logging.getLogger(__name__)

WAITING, RECORDING, LEARNING, DONE, FAILED = "waiting", "recording", "learning", "done", "failed"
LEARN_KEY = "l"  # the window's key that starts recording


@dataclass
class LiveLearner:
    """Records `windows` windows as class `name`, then learns them into the bundle `out`.

    `start_after`: seconds after the first full window at which recording starts by itself
    (None: only the key starts it). `deliver(out)` gets the written bundle's folder."""
    name: str
    windows: int
    every: int
    out: Path
    deliver: Callable[[Path], None]
    start_after: float | None = None
    min_clips: int = 1
    state: str = WAITING
    rows: list[np.ndarray] = field(default_factory=list)
    reason: str = ""
    _first_step: float | None = None
    _last_index: int | None = None
    _thread: threading.Thread | None = None

    def trigger(self) -> None:
        """The key: start recording now (a second press does nothing)."""
        if self.state == WAITING:
            self.state = RECORDING
            log.info("recording %d windows of %r", self.windows, self.name)

    def on_step(self, rec: Recognizer, window: np.ndarray, index: int) -> None:
        """One full ring `(T, feature_dim)` at source frame `index`; records it when due."""
        now = time.monotonic()
        if self._first_step is None:
            self._first_step = now
        if self.state == WAITING and self.start_after is not None and now - self._first_step >= self.start_after:
            self.trigger()
        if self.state != RECORDING:
            return
        if self._last_index is not None and index - self._last_index < self.every:
            return
        self._last_index = index
        self.rows.append(window_rows(rec, window[None]))
        if len(self.rows) == self.windows:
            self.state = LEARNING
            self._thread = threading.Thread(target=self._learn, args=(rec.bundle.path,), daemon=True,
                                            name="stpr-learn")
            self._thread.start()

    def _learn(self, bundle: Path) -> None:
        try:
            learn(bundle, self.out, {self.name: np.concatenate(self.rows)}, [], min_clips=self.min_clips)
            self.deliver(self.out)
            self.state = DONE
            log.info("learned %r from %d windows: %s", self.name, self.windows, self.out)
        except Exception as e:  # the stream goes on with the old bundle whatever failed
            self.state, self.reason = FAILED, str(e) or type(e).__name__
            log.warning("could not learn %r: %s; the old bundle keeps serving", self.name, self.reason)

    def wait(self, timeout: float) -> None:
        """Let a learning in progress finish (at the end of the stream)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def unfinished(self) -> str:
        """Why the class was not learned, in one line ("" once it was): for a run that ended first."""
        if self.state == DONE:
            return ""
        if self.state == FAILED:
            return f"--learn {self.name!r}: could not learn it: {self.reason}; nothing learned, the old bundle serves"
        if self.state == LEARNING:
            return f"--learn {self.name!r}: learning did not finish before the run ended; nothing learned"
        got = "before recording started" if self.state == WAITING else \
            f"after {len(self.rows)} of the {self.windows} windows"
        return (f"--learn {self.name!r}: the source ended {got}: nothing learned; give a longer video, fewer "
                "--learn-windows or a smaller --learn-after")

    def status(self) -> dict:
        """What the overlay and the events show."""
        s = {"class": self.name, "state": self.state, "recorded": len(self.rows), "of": self.windows}
        if self.reason:
            s["reason"] = self.reason
        return s


class LearnOptions(NamedTuple):
    name: str
    windows: int
    every: int | None  # None: T
    after: float | None
    out: Path | None


def make_learner(bundle: Bundle, bundle_dir: Path, watcher: "BundleWatcher", opts: LearnOptions, *, clip: bool,
                 headless: bool, watch: bool, classes_file: Path | None) -> LiveLearner:
    """The session of `stpr-run --learn`, after every check that can fail before the stream starts."""
    if clip:
        raise click.UsageError("--learn records windows from a stream; it does not go with --clip")
    if headless and opts.after is None:
        raise click.UsageError("--learn with --headless needs --learn-after SECONDS: there is no window to press "
                               f"{LEARN_KEY} in")
    if classes_file is not None:
        raise click.UsageError("--learn writes a new bundle, which a class overlay of this one does not fit; drop "
                               "--classes and add the names again with stpr-classes after learning")
    if opts.windows < MIN_CLIPS:
        raise click.UsageError(f"--learn-windows {opts.windows}: a new class needs at least {MIN_CLIPS} examples")
    check_learnable(bundle)
    # stpr-learn's own check of the name (empty, another spelling of a class): refused now, not after recording
    check_request(bundle.classes, {opts.name: np.zeros((opts.windows, 0))}, [], MIN_CLIPS)
    out = opts.out or bundle.path.parent / f"{bundle.path.name}-learned-{time.strftime('%Y%m%d-%H%M%S')}"
    prepare_target(out, force=False)
    if watch and bundle_dir.is_symlink():  # the link is switched, so a restart serves the new bundle too
        def deliver(folder: Path) -> None:
            publish(folder, bundle_dir)
    else:
        deliver = watcher.offer_folder
    return LiveLearner(opts.name, opts.windows, opts.every or bundle.frames, out, deliver, start_after=opts.after,
                       min_clips=MIN_CLIPS)
