"""The annotation drawn on frames for the window and `--output`: label (or `unknown` and
the nearest class), score, fps and one labelled bar per expert's routing weight, each on
a dark box so it stays readable over bright scenes. Text is fitted to the frame's width;
a frame under 160 pixels gets the label alone."""
from __future__ import annotations

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BOX = (0, 0, 0)  # BGR: black behind every text
_LABEL, _TEXT, _BAR = (0, 255, 0), (255, 255, 255), (0, 200, 255)
_UNKNOWN = (0, 140, 255)  # BGR orange: no known action fits
_RECORDING = (0, 0, 255)  # BGR red: stpr-run --learn is recording examples


_MIN_SCALE = 0.3  # Hershey simplex at 0.3 is about 7 pixels high: smaller is no longer legible
SMALL_FRAME = 160  # below this height or width only the label is drawn: fps, state and bars would cover it


def _fit(text: str, scale: float, thickness: int, width: int) -> tuple[str, float]:
    """`text` and a scale at which it fits `width` pixels: scaled down, and past the smallest
    legible scale cut short with "..", never drawn over the frame's edge."""
    w = cv2.getTextSize(text, _FONT, scale, thickness)[0][0]
    if w <= width:
        return text, scale
    if scale * width / w >= _MIN_SCALE:
        return text, scale * width / w
    while len(text) > 1 and cv2.getTextSize(text + "..", _FONT, _MIN_SCALE, thickness)[0][0] > width:
        text = text[:-1]
    return text + "..", _MIN_SCALE


def _text_box(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int],
              thickness: int, bar: bool = False) -> int:
    """Text with its filled background box, fitted to the frame's width; returns the box's bottom y.
    `bar`: the box is a caption bar across the frame's top (a thumbnail's one line)."""
    x, y = org
    text, scale = _fit(text, scale, thickness, img.shape[1] - 2 * x)
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, int(4 * scale))
    top_left, right = ((0, 0), img.shape[1] - 1) if bar else ((x - pad, y - h - pad), x + w + pad)
    cv2.rectangle(img, top_left, (right, y + base + pad), _BOX, -1)
    cv2.putText(img, text, (x, y), _FONT, scale, colour, thickness, cv2.LINE_AA)
    return y + base + pad


def _routing_bars(img: np.ndarray, weights: list[float], scale: float) -> None:
    """Bottom-left panel: one bar per expert, its index under it, on a dark box."""
    h = img.shape[0]
    bar_w, gap, bar_h = int(10 * scale + 2), int(4 * scale + 3), int(60 * scale)
    small = max(0.3, 0.4 * scale)
    (_, th), _ = cv2.getTextSize("0", _FONT, small, 1)
    step = bar_w + gap
    x0, bottom = 8, h - 8 - th - 4  # bars stand on the index row
    cv2.rectangle(img, (x0 - 4, bottom - bar_h - 4), (x0 + len(weights) * step, h - 4), _BOX, -1)
    for k, w in enumerate(weights):
        x = x0 + k * step
        top = bottom - int(bar_h * float(np.clip(w, 0.0, 1.0)))
        cv2.rectangle(img, (x, top), (x + bar_w, bottom), _BAR, -1)
        cv2.putText(img, str(k), (x, h - 8), _FONT, small, _TEXT, 1, cv2.LINE_AA)


def draw_overlay(frame: np.ndarray, event: dict | None, fps: float) -> np.ndarray:
    """A copy of `frame` with the latest prediction (`event`; None before the first one),
    the fps and the routing weights drawn on it."""
    out = frame.copy()
    scale = max(0.35, out.shape[0] / 720)
    thick = max(1, int(2 * scale))
    small = min(out.shape[:2]) < SMALL_FRAME  # a thumbnail-sized stream: the label alone, fitted
    x = 4 if small else 8
    y = int(28 * scale) + (0 if small else 4)
    if event is None:
        _text_box(out, "filling the window...", (x, y), scale * 0.8, _TEXT, 1, bar=small)
        return out
    label, score = event["top"][0]
    if event.get("zero_shot", [False])[0]:  # added by name on the device: no expert behind it
        label = f"{label} (zero-shot)"
    if small:  # one caption bar across the top: the class (its name before the score), or `unknown`
        text = "unknown" if event.get("unknown") else f"{label} {score:.2f}"
        _text_box(out, text, (x, y), scale, _UNKNOWN if event.get("unknown") else _LABEL, 1, bar=True)
        return out
    if event.get("unknown"):  # name the nearest class too, smaller: it is not a claim
        below = _text_box(out, "unknown", (8, y), scale, _UNKNOWN, thick)
        below = _text_box(out, f"nearest: {label} {score:.2f}", (8, below + int(22 * scale) + 4), scale * 0.7,
                          _TEXT, 1)
    else:
        below = _text_box(out, f"{label} {score:.2f}", (8, y), scale, _LABEL, thick)
    below = _text_box(out, f"{fps:.1f} fps", (8, below + int(22 * scale) + 4), scale * 0.8, _TEXT, 1)
    if event.get("learning"):
        _learning(out, event["learning"], below + int(22 * scale) + 4, scale)
    if "routing" in event:  # the head alone runs no expert: no bars
        _routing_bars(out, list(event["routing"].values()), scale)
    return out


def _learning(img: np.ndarray, s: dict, y: int, scale: float) -> None:
    """The --learn session's state: red while it records, so the person in front of the
    camera knows when to perform the action."""
    text = {"waiting": f"press l to record '{s['class']}'",
            "recording": f"REC '{s['class']}' {s['recorded']}/{s['of']}",
            "learning": f"learning '{s['class']}'...",
            "done": f"learned '{s['class']}'",
            "failed": f"not learned: {s.get('reason', '')[:60]}"}[s["state"]]
    colour = _RECORDING if s["state"] in ("recording", "failed") else _TEXT
    _text_box(img, text, (8, y), scale * 0.8, colour, max(1, int(2 * scale)) if s["state"] == "recording" else 1)
