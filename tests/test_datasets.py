"""Dataset readers on tiny trees in the official on-disk formats (videos written with OpenCV)."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stpr.train.data.folder import folder_dataset
from stpr.train.data.hmdb51 import hmdb51
from stpr.train.data.kinetics import kinetics400
from stpr.train.data.ucf101 import ucf101
from stpr.train.data.videos import VideoClips
from stpr.train.errors import StprError

T, SIZE = 4, 16
# mean 0, std 1: a clip value is the RGB intensity / 255, so frame content can be checked.
KW = dict(num_frames=T, size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "data" / "extract_frames.py"


def frame(k: int, tint: int = 0) -> np.ndarray:
    """Frame k of a test video: flat grey level 20 * k + 10 (identifies k after decoding)
    plus a smooth gradient and a tint, so videos differ and JPEG re-encoding stays accurate."""
    img = np.full((32, 32, 3), 20 * k + 10, np.float32)
    img += np.linspace(0, 30, 32, dtype=np.float32)[None, :, None]
    img[..., 0] += tint
    return np.clip(img, 0, 255).astype(np.uint8)


def write_video(path: Path, n: int, tint: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = "mp4v" if path.suffix == ".mp4" else "MJPG"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (32, 32))
    assert w.isOpened(), f"OpenCV cannot write {fourcc} here"
    for k in range(n):
        w.write(frame(k, tint))
    w.release()
    return path


def write_frames(folder: Path, n: int, tint: int = 0) -> Path:
    folder.mkdir(parents=True)
    for k in range(n):
        cv2.imwrite(str(folder / f"{k + 1:06d}.png"), frame(k, tint))  # lossless
    return folder


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def levels(clip: torch.Tensor) -> list[int]:
    """The frame index k of each clip frame, from its mean R and G level (the tint is on B;
    the gradient adds 15)."""
    return [round((float(f[:2].mean()) * 255 - 15 - 10) / 20) for f in clip]


@pytest.fixture
def records():
    """Warnings of the data loggers, captured at the source: the CLI turns propagation off."""
    got: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = got.append  # type: ignore[method-assign]
    logger = logging.getLogger("stpr.train.data")
    logger.addHandler(handler)
    yield got
    logger.removeHandler(handler)


# ---- VideoClips ------------------------------------------------------------------------

def test_videoclips_shape_sampling_and_short_video(tmp_path):
    long = write_video(tmp_path / "long.avi", 12)
    short = write_video(tmp_path / "short.avi", 3)
    ds = VideoClips([(long, 0), (short, 1)], ["a", "b"], train=False, **KW)
    assert ds.frame_counts == [12, 3] and ds.targets == [0, 1] and ds.skipped == []
    x, y = ds[0]
    assert x.shape == (T, 3, SIZE, SIZE) and x.dtype == torch.float32 and y == 0
    assert levels(x) == [1, 4, 7, 10]  # segment centres of 12 frames in 4 segments
    assert torch.equal(x, ds[0][0])  # test mode is deterministic
    assert levels(ds[1][0]) == [0, 1, 1, 2]  # 3 frames for T=4: frames repeat
    tr = VideoClips([(long, 0)], ["a"], train=True, **KW)
    draws = [levels(tr[0][0]) for _ in range(6)]
    for d in draws:  # one random frame inside each segment of 3 frames
        assert all(3 * s <= k < 3 * s + 3 for s, k in enumerate(d))
    assert len({tuple(d) for d in draws}) > 1  # offsets vary between reads, also without workers


@pytest.mark.parametrize("header", [0, 15])
def test_video_frame_count_header_absent_or_wrong(tmp_path, monkeypatch, header):
    """No frame count in the header: count by reading. A header overstating the count (common
    in mp4s): indices past the real end repeat the last sampled frame instead of failing."""
    real = cv2.VideoCapture

    class Capture:  # a wrapper: subclassing the cv2 type crashes
        def __init__(self, path):
            self.cap = real(path)

        def get(self, prop):
            return header if prop == cv2.CAP_PROP_FRAME_COUNT else self.cap.get(prop)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    video = write_video(tmp_path / "v.avi", 12)
    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    ds = VideoClips([(video, 0)], ["a"], train=False, **KW)
    assert ds.frame_counts == [header or 12]
    assert levels(ds[0][0]) == ([1, 4, 7, 10] if header == 0 else [1, 5, 9, 9])


def test_frame_folder_loads_like_the_video(tmp_path):
    video = write_video(tmp_path / "v.avi", 9, tint=40)
    folder = tmp_path / "frames"
    folder.mkdir()
    cap = cv2.VideoCapture(str(video))  # the decoded frames, stored losslessly
    k = 0
    while (r := cap.read())[0]:
        k += 1
        cv2.imwrite(str(folder / f"{k:06d}.png"), r[1])
    ds = VideoClips([(video, 0), (folder, 0)], ["a"], train=False, **KW)
    assert ds.frame_counts == [9, 9]
    assert torch.equal(ds[0][0], ds[1][0])


def test_unreadable_samples_are_skipped_then_refused(tmp_path, records):
    good = [write_video(tmp_path / f"g{i}.avi", 6) for i in range(3)]
    bad = corrupt(tmp_path / "bad.avi")
    empty = tmp_path / "empty"
    empty.mkdir()
    samples = [(p, 0) for p in good] + [(bad, 0), (empty, 0), (tmp_path / "gone.avi", 0)]
    ds = VideoClips(samples, ["a"], train=False, max_unreadable=0.5, **KW)
    assert len(ds) == 3 and ds.targets == [0, 0, 0]
    assert dict(ds.skipped) == {bad: "unreadable", empty: "empty", tmp_path / "gone.avi": "missing"}
    assert any("bad.avi" in r.getMessage() for r in records)
    with pytest.raises(StprError, match=r"3 of 6 videos .*bad\.avi.*max_unreadable"):
        VideoClips(samples, ["a"], train=False, **KW)


def test_sample_changed_after_scan_names_the_path(tmp_path):
    video = write_video(tmp_path / "v.avi", 6)
    ds = VideoClips([(video, 0)], ["a"], train=False, **KW)
    corrupt(video)
    with pytest.raises(StprError, match="v.avi"):
        ds[0]


# ---- UCF101 ----------------------------------------------------------------------------

UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]


def make_ucf(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(UCF_CLASSES)))
    for split, test_group in ((1, 1), (2, 2)):
        train_lines, test_lines = [], []
        for i, c in enumerate(UCF_CLASSES):
            for g in (1, 2, 3):
                rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
                (test_lines.append(rel) if g == test_group else train_lines.append(f"{rel} {i + 1}"))
        (lists / f"trainlist0{split}.txt").write_text("\r\n".join(train_lines) + "\r\n")
        (lists / f"testlist0{split}.txt").write_text("\r\n".join(test_lines) + "\r\n")
    for i, c in enumerate(UCF_CLASSES):
        for g in (1, 2, 3):
            write_video(root / "UCF-101" / c / f"v_{c}_g{g:02d}_c01.avi", 6 + g, tint=30 * i)


def test_ucf101_official_layout(tmp_path):
    make_ucf(tmp_path)
    tr = ucf101(tmp_path, 1, train=True, **KW)
    te = ucf101(tmp_path, 1, train=False, **KW)
    assert tr.classes == te.classes == UCF_CLASSES
    assert tr.targets == [0, 0, 1, 1, 2, 2] and te.targets == [0, 1, 2]
    assert all("_g01_" in str(p) for p, _ in te.samples)
    assert all("_g01_" not in str(p) for p, _ in tr.samples)
    assert all("_g02_" in str(p) for p, _ in ucf101(tmp_path, 2, train=False, **KW).samples)
    # A frame folder next to (instead of) the video is preferred; it loads the same frames.
    video = tmp_path / "UCF-101/YoYo/v_YoYo_g01_c01.avi"
    before = te[2][0]
    write_frames(video.with_suffix(""), 7, tint=60)
    video.unlink()
    te2 = ucf101(tmp_path, 1, train=False, **KW)
    assert te2.samples[2][0] == video.with_suffix("") and te2.frame_counts[2] == 7
    assert (te2[2][0] - before).abs().max() < 0.05  # MJPG vs lossless frames


def test_ucf101_missing_and_corrupt(tmp_path):
    make_ucf(tmp_path)
    (tmp_path / "UCF-101/Basketball/v_Basketball_g02_c01.avi").unlink()
    corrupt(tmp_path / "UCF-101/YoYo/v_YoYo_g03_c01.avi")
    tr = ucf101(tmp_path, 1, train=True, max_unreadable=0.4, **KW)
    assert tr.targets == [0, 0, 1, 2]
    assert sorted(r for _, r in tr.skipped) == ["missing", "unreadable"]
    with pytest.raises(StprError, match="2 of 6 videos"):
        ucf101(tmp_path, 1, train=True, **KW)
    with pytest.raises(StprError, match="split must be 1, 2 or 3"):
        ucf101(tmp_path, 4, train=True, **KW)


# ---- HMDB51 ----------------------------------------------------------------------------

def test_hmdb51_official_layout(tmp_path, records):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    ids = {"a": "1", "b": "1", "c": "2", "d": "0"}  # d is unused in split 1
    for i, cls in enumerate(["wave", "brush_hair", "cartwheel"]):
        # brush_hair lies under hmdb51_org/, the others directly under the root.
        base = tmp_path / "hmdb51_org" if cls == "brush_hair" else tmp_path
        for v, sid in ids.items():
            write_video(base / cls / f"{cls}_{v}_f_cm_np1_fr_med_0.avi", 7, tint=30 * i)
        for n in (1, 2):
            lines = [f"{cls}_{v}_f_cm_np1_fr_med_0.avi {sid if n == 1 else '1'} " for v, sid in ids.items()]
            (splits / f"{cls}_test_split{n}.txt").write_text("\n".join(lines) + "\n")
    tr = hmdb51(tmp_path, 1, train=True, **KW)
    te = hmdb51(tmp_path, 1, train=False, **KW)
    assert tr.classes == ["brush_hair", "cartwheel", "wave"]
    assert tr.targets == [0, 0, 1, 1, 2, 2] and te.targets == [0, 1, 2]
    assert all("_c_" in p.name for p, _ in te.samples) and not any("_d_" in p.name for p, _ in tr.samples)
    assert tr.samples[0][0].parent == tmp_path / "hmdb51_org" / "brush_hair"
    assert len(hmdb51(tmp_path, 2, train=True, **KW)) == 12  # split 2 uses all four as train
    (tmp_path / "wave/wave_a_f_cm_np1_fr_med_0.avi").unlink()
    with pytest.raises(StprError, match="1 of 6 videos"):
        hmdb51(tmp_path, 1, train=True, **KW)
    tr = hmdb51(tmp_path, 1, train=True, max_unreadable=0.2, **KW)
    assert tr.skipped == [(tmp_path / "wave/wave_a_f_cm_np1_fr_med_0.avi", "missing")]


# ---- Kinetics-400 ----------------------------------------------------------------------

def test_kinetics400_official_layout(tmp_path, records):
    ann = tmp_path / "annotations"
    ann.mkdir()
    head = "label,youtube_id,time_start,time_end,split\n"
    train_rows = [("abseiling", "aaa", 10), ("abseiling", "bbb", 0), ("air drumming", "ccc", 5),
                  ("air drumming", "ddd", 7), ("zumba", "eee", 3), ("zumba", "gone1", 1)]
    val_rows = [("zumba", "vvv", 2), ("abseiling", "www", 4), ("abseiling", "gone2", 9)]
    for name, rows in (("train", train_rows), ("val", val_rows)):
        (ann / f"{name}.csv").write_text(head + "".join(f'"{lab}","{y}",{s},{s + 10},"{name}"\n' for lab, y, s in rows))
    for lab, y, s in train_rows[:5]:  # label folders; spaces spelled as underscores
        write_video(tmp_path / "train" / lab.replace(" ", "_") / f"{y}_{s:06d}_{s + 10:06d}.mp4", 8)
    for lab, y, s in val_rows[:2]:  # flat, as the CVDF tarballs unpack
        write_video(tmp_path / "val" / f"{y}_{s:06d}_{s + 10:06d}.mp4", 8)
    tr = kinetics400(tmp_path, "train", train=True, **KW)
    va = kinetics400(tmp_path, "val", train=False, **KW)
    assert tr.classes == va.classes == ["abseiling", "air drumming", "zumba"]
    assert tr.targets == [0, 0, 1, 1, 2] and va.targets == [2, 0]
    assert tr.skipped == [(tmp_path / "train/zumba/gone1_000001_000011.mp4", "missing")]
    assert va[0][0].shape == (T, 3, SIZE, SIZE)
    assert any("missing" in r.getMessage() for r in records)
    # Missing clips do not count toward max_unreadable; a corrupt existing file does.
    corrupt(tmp_path / "train/abseiling/aaa_000010_000020.mp4")
    with pytest.raises(StprError, match="1 of 5 videos"):
        kinetics400(tmp_path, "train", train=True, **KW)
    tr = kinetics400(tmp_path, "train", train=True, max_unreadable=0.25, **KW)
    assert sorted(r for _, r in tr.skipped) == ["missing", "unreadable"]


# ---- any folder tree -------------------------------------------------------------------

def test_folder_dataset_holdout(tmp_path, records):
    for i, cls in enumerate(["walk", "jump"]):
        for v in range(5):
            write_video(tmp_path / cls / f"{v}.avi", 6, tint=30 * i)
    write_frames(tmp_path / "jump" / "5", 6)  # a frame-folder sample
    write_video(tmp_path / "solo" / "0.avi", 6)
    (tmp_path / "walk" / ".0.tmp123").mkdir()  # a stopped extraction's leftover: ignored
    write_frames(tmp_path / "walk" / "4", 6)  # frames extracted next to 4.avi replace it
    tr = folder_dataset(tmp_path, train=True, **KW)
    te = folder_dataset(tmp_path, train=False, **KW)
    assert tr.classes == te.classes == ["jump", "solo", "walk"]
    assert te.targets == [0, 2] and sorted(tr.targets) == [0] * 5 + [1] + [2] * 4
    paths_tr, paths_te = {p for p, _ in tr.samples}, {p for p, _ in te.samples}
    assert not paths_tr & paths_te and len(paths_tr | paths_te) == 12
    assert paths_te == {p for p, _ in folder_dataset(tmp_path, train=False, **KW).samples}  # deterministic
    assert any("solo" in r.getMessage() for r in records)
    assert tmp_path / "walk" / "4" in paths_tr | paths_te


@pytest.mark.parametrize("seed", range(6))
def test_folder_holdout_is_drawn_among_readable_videos(tmp_path, seed):
    # "walk" has 3 files, one broken: its one test video must be a readable one, for
    # every seed (the broken file used to be drawn as the only test video).
    for v in range(3):
        write_video(tmp_path / "jump" / f"{v}.avi", 6)
    for v in range(2):
        write_video(tmp_path / "walk" / f"{v}.avi", 6, tint=30)
    corrupt(tmp_path / "walk" / "2.avi")
    kw = dict(KW, max_unreadable=0.5, seed=seed)
    te = folder_dataset(tmp_path, train=False, **kw)
    tr = folder_dataset(tmp_path, train=True, **kw)
    assert te.targets.count(1) == 1 and not te.skipped
    assert tr.skipped == [(tmp_path / "walk" / "2.avi", "unreadable")]  # still reported and counted


# ---- scripts/data/extract_frames.py ----------------------------------------------------

def test_extract_frames_resumes_and_matches_video(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("extract_frames", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root, out = tmp_path / "videos", tmp_path / "frames"
    videos = [write_video(root / c / f"v{i}.avi", 5 + 3 * i, tint=40 * i) for c in ("a", "b") for i in range(2)]
    corrupt(root / "b" / "broken.avi")
    assert mod.main(["--root", str(root), "--out", str(out), "--workers", "1"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["videos"], summary["done"], summary["skipped"]) == (5, 4, 0)
    assert [f["video"] for f in summary["failed"]] == [str(root / "b" / "broken.avi")]
    assert sorted(p.name for p in (out / "a" / "v1").iterdir()) == [".done"] + [f"{k:06d}.jpg" for k in range(1, 9)]
    assert not (out / "b" / "broken").exists() and not any(p.name.startswith(".") for p in (out / "b").iterdir())
    mod.main(["--root", str(root), "--out", str(out), "--workers", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["done"], summary["skipped"], len(summary["failed"])) == (0, 4, 1)
    folders = [out / v.relative_to(root).with_suffix("") for v in videos]
    from_video = VideoClips([(v, 0) for v in videos], ["x"], train=False, **KW)
    from_frames = VideoClips([(f, 0) for f in folders], ["x"], train=False, **KW)
    assert from_frames.frame_counts == from_video.frame_counts
    for i in range(len(videos)):
        assert (from_frames[i][0] - from_video[i][0]).abs().mean() < 0.1
    small = tmp_path / "small"
    mod.main(["--root", str(root / "a"), "--out", str(small), "--workers", "1", "--short-side", "16"])
    assert cv2.imread(str(small / "v0" / "000001.jpg")).shape == (16, 16, 3)
