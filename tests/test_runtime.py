"""stpr-run: clip mode equals PyTorch, streaming events, no torch needed, bad input."""
import json
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import FakeLiveCapture, decode, predictions, write_video

from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.bundle.manifest import BundleError, seal_manifest
from stpr.runtime.cli import run_cli, run_source
from stpr.runtime.io.stream import FeatureRing, LatestFrame, StreamStalled
from stpr.runtime.model.preprocess import preprocess
from stpr.runtime.model.sampling import centre_indices
from stpr.train.restore import restore


def invoke(*args: str):
    return CliRunner().invoke(run_cli.main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("upscale", [None, 48])
def test_clip_mode_equals_pytorch_on_the_same_frames(demo, tmp_path, upscale):
    root, run, bundle, test = demo
    r = restore(run)
    model = r.learner.model.eval()
    b = load_bundle(bundle)
    for i in (0, 5, 9):  # clips of the first seen classes
        video = write_video(tmp_path / f"c{i}.avi", [test.raw_clip(i)], upscale)
        events = tmp_path / f"c{i}.jsonl"
        res = invoke("--bundle", str(bundle), "--video", str(video), "--clip", "--headless", "--jsonl", str(events))
        assert res.exit_code == 0, res.output
        event = predictions(events)[0]
        frames = decode(video)
        x = np.stack([preprocess(frames[j], b.size, b.mean, b.std) for j in centre_indices(len(frames), b.frames)])
        with torch.no_grad():
            out = model(torch.from_numpy(x)[None], routing=r.cfg.method.routing, tau=r.cfg.method.tau)
        probs = torch.softmax(out["logits"].double(), -1)[0].numpy()
        assert event["top"][0][0] == b.classes[int(probs.argmax())]
        assert event["top"][0][1] == pytest.approx(float(probs.max()), abs=1e-3)
        assert set(event) >= {"frame", "time", "top", "routing", "latency_ms"}


@pytest.mark.parametrize("stride", [1, 2])
def test_streaming_gives_one_event_per_step(demo, tmp_path, stride):
    root, run, bundle, test = demo
    video = write_video(tmp_path / "long.avi", [test.raw_clip(i) for i in (0, 4, 8, 12)])  # 32 frames
    events = tmp_path / "ev.jsonl"
    out = tmp_path / "annotated.mkv"
    res = invoke("--bundle", str(bundle), "--video", str(video), "--headless", "--stride", str(stride),
                 "--smooth", "3", "--jsonl", str(events), "--output", str(out))
    assert res.exit_code == 0, res.output
    lines = predictions(events)
    entering = len(range(0, 32, stride))  # frames entering the ring
    assert len(lines) == entering - 8 + 1
    for e in lines:
        assert set(e) >= {"frame", "time", "top", "routing", "latency_ms"}
        assert set(e["latency_ms"]) >= {"preprocess", "backbone", "experts", "router", "total"}
        assert len(e["routing"]) == 3 and sum(e["routing"].values()) == pytest.approx(1.0, abs=1e-4)
        assert e["frame"] % stride == 0
    assert "predictions" in res.output and "p99" in res.output
    # An annotated copy of the input: every frame (also with --stride 2), at the source's 8 fps.
    assert len(decode(out)) == 32 and cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(8)


def test_max_frames_and_fp16(demo, tmp_path):
    root, run, bundle, test = demo
    video = write_video(tmp_path / "v.avi", [test.raw_clip(0), test.raw_clip(1)])
    events = tmp_path / "ev.jsonl"
    res = invoke("--bundle", str(bundle), "--video", str(video), "--headless", "--fp16", "--max-frames", "10",
                 "--jsonl", str(events))
    assert res.exit_code == 0, res.output
    assert len(predictions(events)) == 3  # frames 7, 8, 9


def test_runtime_runs_with_torch_absent(demo, tmp_path):
    root, run, bundle, test = demo
    video = write_video(tmp_path / "v.avi", [test.raw_clip(0)])
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from stpr.runtime.cli.run_cli import main\n"
        f"main(['--bundle', {str(bundle)!r}, '--video', {str(video)!r}, '--headless', '--clip'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "_moving_" in res.stdout
    bad = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import torch"],
                         capture_output=True, text=True)
    assert bad.returncode != 0  # the block really blocks


def test_camera_that_does_not_open(demo):
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(demo[2]), "--camera", "97", "--headless"])
    assert res.exit_code != 0 and "camera 97 did not open" in res.output


def test_truncated_video_keeps_events_and_fails(demo, tmp_path):
    root, run, bundle, test = demo
    video = write_video(tmp_path / "v.avi", [test.raw_clip(i) for i in range(0, 40, 4)])  # 80 frames
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 3])  # header says 80 frames; the rest is gone
    events = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bundle), "--video", str(cut), "--headless",
                                            "--jsonl", str(events)])
    assert res.exit_code != 0
    assert "truncated or corrupt" in res.output or "could not open" in res.output
    if "truncated" in res.output:
        assert len(predictions(events)) > 0  # what was predicted is kept


def _frames_bgr(test, n: int) -> list[np.ndarray]:
    clips = np.concatenate([test.raw_clip(i) for i in range(0, 4 * ((n + 7) // 8), 4)])[:n]
    return [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in clips]


def test_stalled_stream_times_out_flushes_and_exits_nonzero(demo, tmp_path, monkeypatch):
    root, run, bundle, test = demo
    monkeypatch.setattr(run_source, "open_capture", lambda s, **kw: FakeLiveCapture(_frames_bgr(test, 12), "stall"))
    events = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bundle), "rtsp://camera.local/stream", "--headless",
                                            "--jsonl", str(events), "--timeout", "1"])
    assert res.exit_code == run_cli.EXIT_STREAM, res.output
    assert "stopped delivering" in res.output and "events so far are saved" in res.output
    assert len(predictions(events)) >= 1  # flushed before exit


def test_ctrl_c_exits_cleanly_with_summary(demo, tmp_path, monkeypatch):
    root, run, bundle, test = demo
    frames = _frames_bgr(test, 12)
    original = run_source.stream

    def interrupted(rec, frames_it, **kw):
        def gen():
            for n, item in enumerate(frames_it):
                if n == 10:
                    raise KeyboardInterrupt
                yield item
        return original(rec, gen(), **kw)

    monkeypatch.setattr(run_source, "stream", interrupted)
    video = write_video(tmp_path / "v.avi", [np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])])
    events = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bundle), "--video", str(video), "--headless",
                                            "--jsonl", str(events)])
    assert res.exit_code == 130
    assert "interrupted" in res.output and "predictions 3" in res.output  # frames 7, 8, 9
    assert len(predictions(events)) == 3


@pytest.mark.parametrize("damage, message", [
    ("missing", "'expert_1.onnx' is missing"),
    ("altered", "'anchors.npy' does not match its sha256"),
    ("mismatched", "inconsistent: text_embeddings is (12, 64), manifest says (12, 65)"),
    ("schema", "bundle schema 99"),
    ("edited", "does not match its manifest_sha256"),
])
def test_bad_bundle_is_refused_with_the_problem(demo, tmp_path, damage, message):
    bundle = tmp_path / "b"
    shutil.copytree(demo[2], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if damage == "missing":
        (bundle / "expert_1.onnx").unlink()
    elif damage == "altered":
        (bundle / "anchors.npy").write_bytes((bundle / "anchors.npy").read_bytes()[:-4] + b"\0\0\0\1")
    elif damage == "mismatched":
        manifest["dims"]["D"] = 65
    elif damage == "schema":
        manifest["schema_version"] = 99
    # A consistent but wrong manifest (an exporter bug) is resealed; "edited" is a hand edit.
    sealed = manifest if damage == "edited" else seal_manifest(manifest)
    if damage == "edited":
        manifest["routing"]["tau"] = 0.5
    (bundle / "manifest.json").write_text(json.dumps(sealed))
    with pytest.raises(BundleError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_bundle(bundle)
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bundle), "--camera", "0", "--headless"])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_cuda_asked_but_absent_is_an_error(demo, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(demo[2]), "--camera", "0", "--headless",
                                            "--device", "cuda"])
    assert res.exit_code != 0 and "--device cuda asked for a GPU" in res.output


def test_ring_buffer_and_latest_frame_drops():
    ring = FeatureRing(3, 2)
    for v in range(5):
        ring.push(np.full(2, v, np.float32))
    assert ring.full and ring.window()[:, 0].tolist() == [2, 3, 4]
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(20)]
    cap = FakeLiveCapture(frames, "stall")
    grab = LatestFrame(cap)
    grab.start()
    time.sleep(0.5)  # the consumer is slow: most frames were replaced unseen
    index, frame = grab.get(timeout=1)
    assert index == 19 and frame[0, 0, 0] == 19 and grab.dropped == 19
    with pytest.raises(StreamStalled):
        grab.get(timeout=0.3)
    assert grab.stop(wait=5)


def test_preprocess_resizes_crops_and_normalises():
    frame = np.zeros((60, 100, 3), np.uint8)
    frame[:, :, 2] = 255  # red in BGR
    mean, std = np.array([0.5, 0.5, 0.5], np.float32), np.array([0.5, 0.5, 0.5], np.float32)
    x = preprocess(frame, 32, mean, std)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0) and np.allclose(x[1:], -1.0)  # RGB order, (x - .5) / .5


def test_centre_indices_match_training_sampling():
    from stpr.train.data.sampling import tsn_indices

    for n in (5, 8, 16, 31):
        assert centre_indices(n, 8).tolist() == tsn_indices(n, 8, train=False).tolist()
