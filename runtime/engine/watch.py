"""Hot bundle swap (`stpr-run --watch`): follow a bundle path, load a new bundle beside
the running one, and swap between two streaming steps without losing a prediction.

A thread polls the path (a symlink that `stpr-export --publish` switches by rename, or
a folder replaced by rename). When what it points at changes, the thread loads the new
bundle, verifies it (manifest, hashes, shapes, the same preprocessing, a smoke
inference) and starts its sessions, all while the old bundle keeps serving. The
streaming loop then takes the ready recognizer between two steps. A bundle that fails
is refused with its reason, and the old one goes on.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..bundle.load import Bundle, load_bundle
from ..bundle.manifest import MANIFEST_NAME
from .recognizer import Recognizer

log = logging.getLogger(__name__)


@dataclass
class Offer:
    """What the watcher hands the streaming loop: a verified recognizer, or a refusal."""
    bundle: str  # the resolved bundle folder
    recognizer: Recognizer | None = None  # started and verified; None for a refusal
    reason: str = ""


def _identity(path: Path) -> tuple:
    # The resolved folder plus the manifest's inode and mtime: a switched link changes the
    # first, a folder replaced by rename (stpr-export --force) the second.
    real = os.path.realpath(path)
    try:
        st = os.stat(os.path.join(real, MANIFEST_NAME))
    except OSError:
        return (real, None, None)
    return (real, st.st_ino, st.st_mtime_ns)


def _same_input(old: Bundle, new: Bundle) -> str:
    """Why frames preprocessed for `old` cannot feed `new` ("" when they can)."""
    for what, a, b in (("frames T", old.frames, new.frames), ("size", old.size, new.size),
                       ("mean", old.mean.tolist(), new.mean.tolist()), ("std", old.std.tolist(), new.std.tolist())):
        if a != b:
            return f"its preprocessing differs ({what} {a} -> {b}); restart stpr-run to change it"
    return ""


def verify_recognizer(rec: Recognizer) -> None:
    """One inference on a blank frame and window: shapes as the manifest says, finite scores."""
    b = rec.bundle
    feats = rec.frame_features(np.zeros((1, 3, b.size, b.size), np.float32))
    if feats.shape != (1, rec.feature_dim):
        raise ValueError(f"the backbone gives features {feats.shape}, the manifest says (1, {rec.feature_dim})")
    out = rec.classify(np.zeros((1, b.frames, rec.feature_dim), np.float32))
    K, C = int(b.manifest["dims"]["K"]), len(rec.names)  # a head-only bundle has tasks but no expert files
    if out["weights"].shape != (1, K) or out["probs"].shape != (1, C):
        raise ValueError(f"the experts give routing weights {out['weights'].shape} and scores {out['probs'].shape}, "
                         f"the manifest says (1, {K}) and (1, {C})")
    if not np.isfinite(out["probs"]).all():
        raise ValueError("the model gives non-finite scores on a blank window")


class BundleWatcher(threading.Thread):
    """Polls `path` every `interval` s; offers each new bundle, loaded and verified, or its refusal."""

    def __init__(self, path: Path, start_recognizer: Callable[[Bundle], Recognizer], interval: float = 2.0) -> None:
        super().__init__(daemon=True, name="stpr-bundle-watch")
        self.path, self.start_recognizer, self.interval = Path(path), start_recognizer, interval
        self.seen = _identity(self.path)
        self.serving_bundle: Bundle | None = None  # set by the caller: what the new one must match
        self._offers: deque[Offer] = deque()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._swapped_in: Recognizer | None = None  # the watcher's to close at the end

    @property
    def resolved(self) -> Path:
        return Path(self.seen[0])

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            now = _identity(self.path)
            if now != self.seen:
                self.seen = now
                self._offer(self._load(Path(now[0])))

    def _load(self, folder: Path) -> Offer:
        try:
            bundle = load_bundle(folder)
            if self.serving_bundle is not None and (why := _same_input(self.serving_bundle, bundle)):
                raise ValueError(why)
            rec = self.start_recognizer(bundle)
        except Exception as e:  # whatever is wrong with it, the running bundle must go on
            return Offer(str(folder), reason=str(e) or type(e).__name__)
        try:
            verify_recognizer(rec)
        except Exception as e:
            rec.__exit__(None, None, None)
            return Offer(str(folder), reason=f"smoke inference failed: {e}")
        return Offer(str(folder), rec)

    def offer_folder(self, folder: Path) -> str:
        """Load, verify and offer the bundle in `folder` now, from any thread: how the bundle
        that `stpr-run --learn` wrote reaches the stream when no link is watched. Returns
        the refusal's reason ("" when a ready bundle was offered)."""
        offer = self._load(Path(folder))
        self._offer(offer)
        return offer.reason

    def _offer(self, offer: Offer) -> None:
        with self._lock:
            if offer.recognizer is not None:  # a newer bundle supersedes one not yet taken
                for old in [o for o in self._offers if o.recognizer is not None]:
                    self._offers.remove(old)
                    old.recognizer.__exit__(None, None, None)
            self._offers.append(offer)

    @property
    def has_offer(self) -> bool:
        """Whether an offer (a ready bundle or a refusal) waits for the next step."""
        with self._lock:
            return bool(self._offers)

    def take(self) -> list[Offer]:
        """Offers made since the last call, oldest first (non-blocking)."""
        with self._lock:
            offers, self._offers = list(self._offers), deque()
        return offers

    def stop(self) -> None:
        """Stop polling; close what the watcher started (the swapped-in and any untaken recognizer)."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=60)
        for offer in self.take():
            if offer.recognizer is not None:
                offer.recognizer.__exit__(None, None, None)
        if self._swapped_in is not None:
            self._swapped_in.__exit__(None, None, None)
            self._swapped_in = None

    def between_steps(self, rec: Recognizer, index: int, write: Callable[[dict], None],
                      started: float) -> Recognizer | None:
        """The started recognizer of a ready bundle to swap to (None: keep `rec`). Refusals
        and swaps are logged and written as events; the old recognizer is closed. The
        stream loop rebuilds its own ring with the new one's towers."""
        swapped = None
        for offer in self.take():
            t = round(time.perf_counter() - started, 4)
            if offer.recognizer is None:
                log.warning("refused bundle %s: %s; %s keeps serving", offer.bundle, offer.reason, rec.bundle.path)
                write({"event": "refused", "frame": index, "time": t, "bundle": offer.bundle, "reason": offer.reason,
                       "serving": str(rec.bundle.path)})
                continue
            new, old = offer.recognizer, rec
            b = new.bundle
            rec, self.serving_bundle, self._swapped_in, swapped = new, b, new, new
            old.__exit__(None, None, None)  # the first one is also closed by the CLI's `with`: exits are idempotent
            experts = len(b.manifest.get("experts", ()))  # none in a head-only or head-alone bundle
            log.info("swapped to bundle %s (%d experts, %d classes)", b.path, experts, len(b.classes))
            write({"event": "swap", "frame": index, "time": t, "bundle": str(b.path), "previous": str(old.bundle.path),
                   "experts": experts, "classes": len(b.classes)})
        return swapped
