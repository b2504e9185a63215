"""text_collisions: class texts a cosine classifier cannot tell apart, on any device."""
import pytest
import torch

from stpr.train.model.text import text_collisions


def _texts(device: str) -> torch.Tensor:
    t = torch.eye(4, 8)
    t[1] = t[0] + 1e-3 * t[3]  # 'b' is 'a' to a cosine classifier; 'c' and 'd' are apart
    return t.to(device)


def test_text_collisions_names_the_near_identical_pair():
    pairs = text_collisions(["a", "b", "c", "d"], _texts("cpu"))
    assert [(a, b) for a, b, _ in pairs] == [("a", "b")] and pairs[0][2] > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_text_collisions_takes_text_on_the_gpu():
    # stpr-train encodes class names on the run's device: on CUDA this raised
    # "indices should be either on cpu or on the same device" before every run.
    pairs = text_collisions(["a", "b", "c", "d"], _texts("cuda"))
    assert [(a, b) for a, b, _ in pairs] == [("a", "b")]
