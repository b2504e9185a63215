import os

import pytest

# Never wait on the network for weights in tests: open_clip's hub lookups fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_clip():
    from stpr.train.model.clip_tower import load_clip

    return load_clip("stpr-tiny", "none", seed=0)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """A finished 3-task fast run and its fp16 bundle, shared by the stpr-run tests:
    (root, run dir, bundle dir, synthetic test clips)."""
    from helpers import fast_config

    from stpr.export import export_run
    from stpr.train import run as R
    from stpr.train.data.synthetic import SyntheticActions

    root = tmp_path_factory.mktemp("rt")
    R.run(fast_config(), root / "run")
    export_run(root / "run", root / "bundle", fp16=True)
    return root, root / "run", root / "bundle", SyntheticActions("test", clips_per_class=4, seed=0)


@pytest.fixture
def small_disk(tmp_path):
    """A folder with ~16 KiB free (helpers.SmallDisk: a real tmpfs where mounting is allowed)."""
    from helpers import SmallDisk

    disk = SmallDisk(tmp_path)
    yield disk
    disk.close()


@pytest.fixture(scope="session")
def head_demo(tmp_path_factory):
    """A head-alone fast run's bundle (12 of the 20 shapes x motions trained, head sums
    shipped, so it can learn) and videos of classes it never trained:
    (bundle, looping source video of `cross_moving_right`, 4 clip videos of `cross_moving_left`)."""
    from helpers import fast_config, write_video

    from stpr.export import export_run
    from stpr.train import run as R
    from stpr.train.data.synthetic import SyntheticActions

    root = tmp_path_factory.mktemp("served")
    R.run(fast_config(**{"head.mode": "alone", "head.dim": 512}), root / "run")
    export_run(root / "run", root / "bundles" / "demo")
    test = SyntheticActions("test", clips_per_class=4, seed=3)

    def clips(name: str) -> list:
        c = test.classes.index(name)
        return [test.raw_clip(i) for i, t in enumerate(test.targets) if t == c]

    source = write_video(root / "cross_right.avi", clips("cross_moving_right"), size=64)
    uploads = [write_video(root / f"cross_left_{i}.avi", [clip], size=64)
               for i, clip in enumerate(clips("cross_moving_left"))]
    return root / "bundles" / "demo", source, uploads
