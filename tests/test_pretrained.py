"""The packaged pretrained tiny CLIP: offline load, hash check, sparse token rows, and what it knows."""
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from stpr.train import pretrained as P
from stpr.train.data.synthetic import SHAPES
from stpr.train.errors import StprError
from stpr.train.model.clip_tower import load_clip
from stpr.train.model.text import encode_class_names

TAG = "synthetic-shapes"


def test_registry_names_a_packaged_file_with_its_hash():
    entry = P.packaged_tags("stpr-tiny")[TAG]
    path = P.PACKAGE_DIR / entry["file"]
    assert path.suffix == ".safetensors" and path.is_file()
    assert path.stat().st_size < 3 * 2**20  # "a few MB at most"
    assert P.sha256_file(path) == entry["sha256"]


def test_packaged_weights_load_offline_and_differ_from_random(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, pp = load_clip("stpr-tiny", TAG)
    rand, _ = load_clip("stpr-tiny", "none")
    assert pp.size == 32
    assert not torch.equal(model.visual.proj, rand.visual.proj)
    assert all(not p.requires_grad for p in model.parameters())  # frozen like every tower


def test_tampered_or_missing_file_is_refused(tmp_path, monkeypatch):
    entry = P.packaged_tags("stpr-tiny")[TAG]
    copy_dir = tmp_path / "pkg"
    copy_dir.mkdir()
    shutil.copy(P.PACKAGE_DIR / entry["file"], copy_dir / entry["file"])
    (copy_dir / "registry.json").write_text(json.dumps([entry]))
    monkeypatch.setattr(P, "PACKAGE_DIR", copy_dir)
    monkeypatch.setattr(P, "REGISTRY", copy_dir / "registry.json")
    load_clip("stpr-tiny", TAG)  # the intact copy loads
    data = bytearray((copy_dir / entry["file"]).read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the last tensor
    (copy_dir / entry["file"]).write_bytes(bytes(data))
    with pytest.raises(StprError, match="refusing weights .* does not match the expected"):
        load_clip("stpr-tiny", TAG)
    (copy_dir / entry["file"]).unlink()
    with pytest.raises(StprError, match="are missing"):
        load_clip("stpr-tiny", TAG)


def test_sparse_file_round_trip_keeps_used_rows_and_zeros_the_rest(tmp_path):
    model, _ = load_clip("stpr-tiny", "none", seed=3)
    path = tmp_path / "w.safetensors"
    P.save_sparse(model, torch.tensor([49406, 49407, 320, 320]), path, {"note": "test"})
    assert P.is_sparse_token_file(path)
    loaded, _ = load_clip("stpr-tiny", str(path))  # a path works as well as a tag
    table, orig = loaded.token_embedding.weight, model.token_embedding.weight
    assert torch.equal(table[[49406, 49407, 320]], orig[[49406, 49407, 320]])
    assert int((table.abs().sum(1) > 0).sum()) == 3
    assert torch.equal(loaded.visual.proj, model.visual.proj)


def test_pretrained_tower_knows_shapes_and_class_names_are_distinct():
    """What the demo relies on: frames carry shape, and the 20 class texts are not alike."""
    from stpr.train.data.synthetic import SyntheticActions

    model, _ = load_clip("stpr-tiny", TAG)
    ds = SyntheticActions("test", clips_per_class=2)
    frames = torch.stack([ds[i][0][4] for i in range(len(ds))])
    truth = torch.tensor([SHAPES.index(ds.classes[ds.targets[i]].split("_")[0]) for i in range(len(ds))])
    with torch.no_grad():
        img = F.normalize(model.encode_image(frames), dim=-1)
    text = encode_class_names(model, "stpr-tiny", [f"a {s}" for s in SHAPES], ["{}"])
    acc = float(((img @ text.T).argmax(1) == truth).float().mean())
    assert acc >= 0.6, f"zero-shot shape on demo frames {acc:.2f} (chance 0.2)"
    names = encode_class_names(model, "stpr-tiny", ds.classes, ["{}"])
    cos = names @ names.T
    cos.fill_diagonal_(-1)
    assert float(cos.max()) < 0.95, f"two demo class texts have cosine {float(cos.max()):.3f}"
