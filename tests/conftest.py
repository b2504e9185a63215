import os

import pytest

# Never wait on the network for weights in tests: open_clip's hub lookups fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_clip():
    from stpr.train.model.clip_tower import load_clip

    return load_clip("stpr-tiny", "none", seed=0)
