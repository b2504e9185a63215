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


def test_text_twins_agree_with_two_templates(tiny_clip, tmp_path):
    import numpy as np

    from stpr.export.text_export import export_text_tower, text_manifest, write_tokenizer
    from stpr.runtime.contract import TEXT_TOWER_FILE, TOKENIZER_FILE
    from stpr.runtime.text import encoder as runtime_text

    clip, _ = tiny_clip
    templates = ["a video of a person {}.", "{}"]
    names = ["brush_hair", "ApplyEyeMakeup", "circle_moving_left", "TVShow"]
    export_text_tower(clip, tmp_path / TEXT_TOWER_FILE, 17)
    write_tokenizer(tmp_path / TOKENIZER_FILE)
    ref = encode_class_names(clip, "stpr-tiny", names, templates).numpy()
    with runtime_text.TextEncoder(tmp_path, text_manifest(clip, templates)) as enc:
        got = enc.embed_names(names)
        one = enc.embed_names(names[:1])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    single = encode_class_names(clip, "stpr-tiny", names[:1], templates[:1]).numpy()
    assert np.abs(one - single).max() > 1e-3  # both templates count, not only the first
    assert [runtime_text.clean_class_name(n) for n in names] == [clean_class_name(n) for n in names]
