"""Class names from the datasets' folders become prompt words; prompts are averaged."""
import pytest
import torch

from stpr.train.model.text import clean_class_name, encode_class_names


@pytest.mark.parametrize("raw, clean", [
    ("ApplyEyeMakeup", "apply eye makeup"),  # UCF101 CamelCase
    ("YoYo", "yo yo"),
    ("PlayingDaf", "playing daf"),
    ("brush_hair", "brush hair"),  # HMDB51
    ("shoot_bow", "shoot bow"),
    ("air drumming", "air drumming"),  # Kinetics-400
    ("passing American football (in game)", "passing american football (in game)"),
    ("TVShow", "tv show"),
    ("circle_moving_left", "circle moving left"),  # ours
])
def test_clean_class_name(raw, clean):
    assert clean_class_name(raw) == clean


def test_templates_are_averaged_and_need_a_slot(tiny_clip):
    clip, _ = tiny_clip
    one = encode_class_names(clip, "stpr-tiny", ["brush_hair"], ["a video of a person {}."])
    two = encode_class_names(clip, "stpr-tiny", ["brush_hair"], ["a video of a person {}.", "{}"])
    other = encode_class_names(clip, "stpr-tiny", ["brush_hair"], ["{}"])
    assert torch.allclose(two, torch.nn.functional.normalize(one + other, dim=-1), atol=1e-6)
    assert one.norm().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="needs a '\\{\\}'"):
        encode_class_names(clip, "stpr-tiny", ["x"], ["no slot"])
