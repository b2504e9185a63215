"""Clip mode's decoding keeps T frames, not the video; the overlay stays readable."""
import tracemalloc

import cv2
import numpy as np
import pytest

from stpr.runtime.io.clip import clip_frames
from stpr.runtime.io.overlay import draw_overlay
from stpr.runtime.io.stream import SourceFailed
from stpr.runtime.model.sampling import centre_indices


class LongVideo:
    """cv2.VideoCapture's file interface over `n` generated 240x320 frames (frame k is
    filled with k % 256), made on demand like a decoder does."""

    def __init__(self, n: int, header: int | None = None) -> None:
        self.n, self.header, self.k = n, n if header is None else header, -1

    def get(self, prop: int) -> float:
        return float(self.header) if prop == cv2.CAP_PROP_FRAME_COUNT else 25.0

    def grab(self) -> bool:
        self.k += 1
        return self.k < self.n

    def retrieve(self):
        return True, np.full((240, 320, 3), self.k % 256, np.uint8)

    def read(self):
        return (True, self.retrieve()[1]) if self.grab() else (False, None)

    def release(self) -> None:
        pass


@pytest.mark.parametrize("header", [None, 0])  # 0: a container without a frame count
def test_clip_mode_memory_does_not_grow_with_the_video(header):
    tracemalloc.start()
    frames, n = clip_frames(lambda: LongVideo(600, header), "long.mp4", 8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # 600 frames of 230 KB would be 138 MB; the 8 sampled ones are 1.8 MB.
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert n == 600 and [int(f[0, 0, 0]) for f in frames] == [i % 256 for i in centre_indices(600, 8)]


def test_clip_of_a_truncated_file_is_a_source_failure_that_carries_its_decodable_centre_frames():
    with pytest.raises(SourceFailed, match="stopped at frame 100 of 600") as e:
        clip_frames(lambda: LongVideo(100, header=600), "cut.mp4", 8)
    assert e.value.decodable == 100 and "classified from its 100 decodable frames" in str(e.value)
    assert [int(f[0, 0, 0]) for f in e.value.frames] == list(centre_indices(100, 8))


EVENT = {"top": [["circle moving up", 0.91]], "routing": {"expert_0": 0.1, "expert_1": 0.7, "expert_2": 0.2}}


def test_label_has_a_dark_box_over_a_bright_scene():
    white = np.full((240, 320, 3), 255, np.uint8)
    out = draw_overlay(white, EVENT, 25.0)
    box = out[4:16, 8:90]
    assert (box < 60).all(axis=2).mean() > 0.5  # mostly dark behind the text
    assert (box[:, :, 1] > 150).any()  # and the green label is on it


def test_routing_bars_carry_their_expert_index():
    white = np.full((240, 320, 3), 255, np.uint8)
    out = draw_overlay(white, EVENT, 25.0)
    weights_only = draw_overlay(white, {**EVENT, "routing": {"expert_0": 0.0, "expert_1": 0.0, "expert_2": 0.0}},
                                25.0)
    strip = out[-14:-4, 4:60]  # the index row under the bars
    assert (strip > 200).all(axis=2).sum() > 5  # white digits on the dark panel
    # The bar heights follow the weights: expert 1 (0.7) stands taller than expert 0 (0.1).
    bars = (np.abs(out.astype(int) - weights_only).sum(axis=2) > 0)[:, :60].sum(axis=0)
    assert bars.max() > 0 and bars[22:30].max() > bars[8:16].max()


@pytest.mark.parametrize("event", [EVENT, {**EVENT, "top": [["triangle_moving_right", 0.5]], "unknown": True},
                                   {"top": [["circle_moving_right", 0.9]]}, None])
def test_on_a_thumbnail_stream_the_label_alone_fits_inside_the_frame(event):
    grey = np.full((64, 64, 3), 128, np.uint8)
    out = draw_overlay(grey, event, 25.0)
    drawn = (out != grey).any(axis=2)
    rows = np.flatnonzero(drawn.any(axis=1))
    assert rows.size and rows.max() < 24  # one caption line at the top: no fps line, no bars over the scene
    bar = out[:rows.max() + 1]
    text = bar.astype(int).sum(axis=2) > 40  # strokes, lighter than the dark bar behind them
    assert (bar[~text] < 60).all()  # the line is a dark bar behind its text, not loose strokes on the scene
    assert text.any() and not text[:, -3:].any()  # the text ends inside the frame: nothing cut at the edge


def test_text_too_wide_for_a_frame_is_scaled_then_cut():
    out = draw_overlay(np.full((240, 200, 3), 128, np.uint8),
                       {**EVENT, "top": [["a very long class name that cannot fit in two hundred pixels", 0.9]]}, 25.0)
    assert not (out != 128).any(axis=2)[:, -3:].any()


def test_head_alone_events_draw_no_routing_bars():
    white = np.full((240, 320, 3), 255, np.uint8)
    no_routing = {k: v for k, v in EVENT.items() if k != "routing"}
    out = draw_overlay(white, no_routing, 25.0)
    assert (out[-70:, :60] == 255).all()  # the bottom-left panel stays the scene


def test_the_clip_summary_counts_the_frames_it_decoded_and_claims_no_frame_rate():
    from stpr.runtime.cli.app import Summary

    text = Summary(frames=795, predictions=1, decoded=8).text()
    assert text.startswith("clip: 1 prediction from 8 frames decoded of the video's 795, in ")
    assert "fps" not in text
