"""Small configs and runs shared by the pipeline tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from stpr.train.config import Config, dump_config
from stpr.train.config_load import load_config

# A whole protocol in a couple of seconds: 3 tasks of 4 classes, one epoch each.
FAST = {
    "data.protocol": "4+4x2",
    "data.clips_per_class_train": 8,
    "data.clips_per_class_test": 4,
    "optim.epochs_base": 1,
    "optim.epochs_incremental": 1,
    "optim.batch_size": 8,
    "device": "cpu",
    "head.mode": "none",  # the pipeline tests exercise StPR (the demo's default is the head alone)
}


def fast_config(**overrides: object) -> Config:
    return load_config("demo", {**FAST, **overrides})


def start_run_dir(path: Path, cfg: Config) -> None:
    """A run directory as `stpr-train` leaves it before its first task finishes."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(cfg))


def write_video(path: Path, clips: list[np.ndarray], size: int | None = None) -> Path:
    """RGB clips (T, H, W, 3) -> one MJPG .avi at 8 fps (lossy, but decoding is deterministic)."""
    h, w = clips[0].shape[1:3]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8, (size or w, size or h))
    for clip in clips:
        for f in clip:
            f = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
            out.write(cv2.resize(f, (size, size)) if size else f)
    out.release()
    return path


def decode(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while (r := cap.read())[0]:
        frames.append(r[1])
    return frames


class FakeLiveCapture:
    """A live source (cv2.VideoCapture's interface) that delivers `frames`, then stalls,
    ends (the server went away: read() fails at once) or hands over None.

    A stall ends the read after `read_timeout` s, as a capture opened with a read timeout
    does. It records which thread released it and whether a read was running then: a
    capture freed mid-read is what crashed stpr-run at exit."""

    def __init__(self, frames: list[np.ndarray], then: str, fps: float = 0.0, read_timeout: float = 2.0) -> None:
        self.frames, self.then, self.i, self.released, self.fps = frames, then, 0, False, fps
        self.read_timeout = read_timeout
        self.reading = False
        self.released_by: threading.Thread | None = None
        self.released_mid_read = False
        self.read_threads: set[threading.Thread] = set()

    def isOpened(self) -> bool:
        return True

    def read(self):
        self.reading = True
        self.read_threads.add(threading.current_thread())
        try:
            return self._read()
        finally:
            self.reading = False

    def _read(self):
        if self.i < len(self.frames):
            self.i += 1
            time.sleep(0.01)
            return True, self.frames[self.i - 1]
        if self.then == "interrupt":
            return True, None
        if self.then == "end":
            return False, None
        deadline = time.monotonic() + self.read_timeout  # a camera that stops sending
        while not self.released and time.monotonic() < deadline:
            time.sleep(0.02)
        return False, None

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released_mid_read = self.released_mid_read or self.reading
        self.released_by = threading.current_thread()
        self.released = True


class SmallDisk:
    """A folder on a nearly full file system, for the "disk full" tests.

    As root (where mounting is allowed) a real tmpfs of `size` bytes, filled up to its
    last `free` bytes: writes fail with ENOSPC as on a full SD card. Elsewhere the
    commands run with RLIMIT_FSIZE = `free` instead, and a write past it fails with
    EFBIG: the same code path (a failed write()), another errno."""

    def __init__(self, root: Path, free: int = 16 * 1024, size: int = 8 * 2**20) -> None:
        self.path, self.mounted, self.free = root / "disk", False, free
        self.path.mkdir()
        if os.geteuid() == 0 and shutil.which("mount"):
            self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                                          capture_output=True).returncode == 0
        if self.mounted:
            st = os.statvfs(self.path)
            with open(self.path / ".filler", "wb") as f:
                f.write(b"\0" * (st.f_bavail * st.f_frsize - free))

    @property
    def errno_text(self) -> str:
        return "No space left on device" if self.mounted else "File too large"

    def run(self, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        def limit() -> None:
            import resource
            import signal

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.free, self.free))

        return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=None if self.mounted else limit)

    def leftovers(self) -> list[str]:
        """Names in the folder other than the filler: temp files a failed write left."""
        return sorted(p.name for p in self.path.rglob("*") if p.name != ".filler")

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def train_one_and_two_processes(tmp_path: Path, args: list[str]) -> tuple[Path, Path]:
    """`stpr-train args` in one process (`tmp_path/one`) and under torchrun with 2 gloo
    processes (`tmp_path/two`); skips where stpr-train is not installed."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    stpr_train = shutil.which("stpr-train")
    if stpr_train is None:
        pytest.skip("stpr-train is not on PATH (install the package)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for name, launch in (("one", [stpr_train]), ("two", [sys.executable, "-m", "torch.distributed.run",
                                                         "--standalone", "--nproc_per_node", "2", stpr_train])):
        res = subprocess.run([*launch, "--out", str(tmp_path / name), *args], capture_output=True, text=True,
                             env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return tmp_path / "one", tmp_path / "two"


def load_script(name: str):  # noqa: ANN201 (a module)
    """`scripts/<group>/<name>.py` as a module, `name` given as 'group/name' (the scripts folder is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{Path(name).name}_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def damaged(src: Path, dst: Path, edit) -> None:  # noqa: ANN001
    """Copy the bundle, apply `edit(manifest, folder)`, refresh the file hashes and reseal
    the manifest: only the field checks can catch what is left."""
    import json

    from stpr.runtime.bundle.manifest import seal_manifest, sha256_file

    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m, dst)
    m["files"] = {name: sha256_file(dst / name) for name in m["files"]}
    (dst / "manifest.json").write_text(json.dumps(seal_manifest(m)))


def resealed_copy(src: Path, dst: Path, edit) -> Path:
    """A copy of bundle `src` with its manifest edited by `edit(manifest)` and sealed again
    (a valid manifest whatever the edit did to what it describes)."""
    import json

    from stpr.runtime.bundle.manifest import seal_manifest

    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    m.pop("manifest_sha256")
    (dst / "manifest.json").write_text(json.dumps(seal_manifest(m)))
    return dst


def predictions(path: Path) -> list[dict]:
    """The prediction lines of a stpr-run jsonl: each run also appends a `start` event, and
    --watch adds swap and refusal events; those carry an `event` key."""
    import json

    return [e for e in map(json.loads, path.read_text().splitlines()) if "event" not in e]


def write_frame_folders(root: Path, names: list[str], clips: int) -> Path:
    """`root/<class>/<clip>/NN.png`: the first `clips` training clips of each synthetic class
    in `names`, as frame folders (what stpr-learn --data reads)."""
    from stpr.train.data.synthetic import SyntheticActions

    train = SyntheticActions("train", clips_per_class=8, seed=0)
    for name in names:
        c = train.classes.index(name)
        for j, i in enumerate([i for i, t in enumerate(train.targets) if t == c][:clips]):
            folder = root / name / f"{j:02d}"
            folder.mkdir(parents=True)
            for f, frame in enumerate(train.raw_clip(i)):
                cv2.imwrite(str(folder / f"{f:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return root
