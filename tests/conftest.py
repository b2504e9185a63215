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
