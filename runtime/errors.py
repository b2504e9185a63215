"""Every error a stpr command raises for bad input, in one place (torch-free).

Each carries one line that names the value and the fix; the commands print it as
`Error: ...` and exit with the code `exits.py` gives its kind. The modules that raise
them import them from here.
"""
from __future__ import annotations

import numpy as np


class StprError(Exception):
    """The training side's user-facing error: bad input, bad config, missing weights or data
    (`stpr-train`, `stpr-export`; imported there as `stpr.train.errors.StprError`)."""


class BundleError(Exception):
    """A bundle that cannot be used, with what is wrong and what to do."""


class OverlayError(BundleError):
    """An overlay file or an added name that cannot be used, with what to do."""


class StaleOverlay(OverlayError):
    """A sound overlay written for another bundle (a publish or a re-export since): stpr-run
    skips it with a warning, stpr-classes refuses to edit it."""


class LearnError(ValueError):
    """Input that `stpr-learn` refuses, in one line with what to do; nothing is written."""


class SourceError(RuntimeError):
    """A camera, video or frame folder that cannot be read, with what to do."""


class SourceFailed(RuntimeError):
    """A source that failed after it started (stalled, ended live stream, truncated
    file): stpr-run keeps the results so far and exits with its "source failed" code."""


class StreamStalled(SourceFailed):
    """A live stream stopped delivering frames."""


class StreamEnded(SourceFailed):
    """A live stream (camera, URL) ended: for a live source that is a failure, so a
    supervisor restarts it, not a normal end."""


class TruncatedClip(SourceFailed):
    """A video that stops well before its stated length; `frames` are the T centre frames
    of the part that decodes (`decodable` frames), so a prediction can still be made."""

    def __init__(self, message: str, frames: list[np.ndarray], decodable: int) -> None:
        super().__init__(message)
        self.frames, self.decodable = frames, decodable


class DeviceUnavailable(RuntimeError):
    """The user asked for a GPU that did not come up."""


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot be used here: not installed, or no CUDA GPU to build for."""


class OutputError(Exception):
    """An output file that could not be written; the message names it and the cause."""


class OutputBusy(OutputError):
    """An output that another process is writing now (it holds the output's lock)."""


class LockHeld(RuntimeError):
    """Another process holds the lock: it is writing the same target now."""


class ServeError(Exception):
    """`stpr-run --serve` cannot start: its libraries are missing, the address does not bind,
    or the token is unusable. One line with the fix."""
