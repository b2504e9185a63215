"""Any ONNX image tower under the head (`stpr-train --tower FILE.onnx`): two towers of other
architectures, sizes and widths, exported from torch here, through train, export, `stpr-run
--clip` and `stpr-learn`, each without torch; and the towers refused at load, in one line."""
import json

import cv2
import pytest
import torch
from click.testing import CliRunner
from helpers import FAST, write_video
from test_head_without_torch import sets, without_torch
from torch import nn

from stpr.runtime.bundle.load import load_bundle
from stpr.train.cli import main as train_main
from stpr.train.data.synthetic import SyntheticActions

TINY = {**FAST, "head.mode": "alone", "head.dim": 256}
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


class ConvNet(nn.Module):
    """A small conv net with a feature map out: (N, 24, h, w), pooled over h and w."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 24, 3, stride=2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TinyViT(nn.Module):
    """A small ViT with token outputs: (N, 1 + patches, 48), pooled over the tokens."""

    def __init__(self, size: int = 32, patch: int = 8, dim: int = 48) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + (size // patch) ** 2, dim) * 0.02)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        q, k, v = self.qkv(self.norm1(t)).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        t = t + self.out(attn @ v)
        return t + self.mlp(self.norm2(t))


class Scalar(nn.Module):
    """Not an image tower: one number per frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def export(module: nn.Module, path, size: int, dynamic_batch: bool = True):
    torch.manual_seed(0)
    module = module.eval()
    with torch.no_grad():
        for p in module.parameters():  # deterministic, distinct weights per tower
            p.copy_(torch.randn(p.shape) * 0.3)
    dynamic = {"pixels": {0: "n"}, "out": {0: "n"}} if dynamic_batch else None
    torch.onnx.export(module, (torch.zeros(2, 3, size, size),), str(path), input_names=["pixels"],
                      output_names=["out"], dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    conv = export(ConvNet(), root / "conv.onnx", 40)
    (root / "conv.json").write_text(json.dumps({"size": 40, "mean": MEAN, "std": STD}))  # preprocessing beside it
    vit = export(TinyViT(), root / "vit.onnx", 32)
    return {"conv": (conv, []),
            "vit": (vit, ["--tower-size", "32", "--tower-mean", "0.5,0.5,0.5", "--tower-std", "0.25,0.25,0.25"])}


def _learn_data(root):
    train = SyntheticActions("train", clips_per_class=8, seed=0)
    for name in ("cross_moving_right", "cross_moving_left"):  # never trained (4+4x2 trains 12 of 20)
        c = train.classes.index(name)
        for j, i in enumerate([i for i, t in enumerate(train.targets) if t == c][:4]):
            folder = root / name / f"{j:02d}"
            folder.mkdir(parents=True)
            for f, frame in enumerate(train.raw_clip(i)):
                cv2.imwrite(str(folder / f"{f:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return root


@pytest.mark.parametrize("name,dim,size,pool", [("conv", 24, 40, "mean-spatial"), ("vit", 48, 32, "mean-tokens")])
def test_a_tower_of_any_architecture_trains_exports_serves_and_learns_without_torch(towers, tmp_path, name, dim,
                                                                                      size, pool):
    file, flags = towers[name]
    run, bundle = tmp_path / "run", tmp_path / "b0"
    res = without_torch("stpr.train.cli", "--tower", str(file), *flags, "--out", str(run), "--quiet", *sets(TINY))
    assert f"D = {dim}, {size} px" in res.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tower"]["pool"] == pool and metrics["tower"]["dim"] == dim
    without_torch("stpr.export.cli", str(run), "--out", str(bundle))
    b = load_bundle(bundle)
    assert (b.size, b.dim, list(b.mean), list(b.std)) == (size, dim, MEAN, STD)
    assert b.manifest["head"]["tower_io"] == {"input": "pixels", "output": "out", "pool": pool}
    assert (bundle / "head_tower.onnx").read_bytes() == file.read_bytes()
    test = SyntheticActions("test", clips_per_class=1, seed=5)
    clip = write_video(tmp_path / "clip.avi", [test.raw_clip(0)])
    res = without_torch("stpr.runtime.entry", "--bundle", str(bundle), "--video", str(clip), "--clip")
    assert "analytic head (alone" in res.stdout + res.stderr
    without_torch("stpr.runtime.cli.learn_cli", "--bundle", str(bundle), "--out", str(tmp_path / "b1"),
                  "--data", str(_learn_data(tmp_path / "data")))
    assert load_bundle(tmp_path / "b1").classes[-2:] == ["cross_moving_left", "cross_moving_right"]


def test_a_tower_that_is_not_an_image_tower_is_refused_in_one_line_and_nothing_is_written(towers, tmp_path):
    scalar = export(Scalar(), tmp_path / "scalar.onnx", 32)
    fixed = export(ConvNet(), tmp_path / "fixed.onnx", 40, dynamic_batch=False)
    conv, _ = towers["conv"]
    norm = ["--tower-mean", "0.5,0.5,0.5", "--tower-std", "0.25,0.25,0.25"]
    cases = [
        ("output not (B, D)", [str(scalar), "--tower-size", "32", *norm], "an image tower gives (N, D)"),
        ("size not its input", [str(conv), "--tower-size", "32"], "pass --tower-size 40"),
        ("fixed batch", [str(fixed), "--tower-size", "40", *norm], "dynamic first axis"),
        ("no normalisation", [str(scalar), "--tower-size", "32"], "--tower-mean and --tower-std"),
        ("not onnx", [str(tmp_path / "nothing.onnx"), "--tower-size", "32", *norm], "not an .onnx file"),
        ("bad mean", [str(conv), "--tower-mean", "1,2"], "3 comma-separated numbers"),
    ]
    for what, args, words in cases:
        out = tmp_path / f"run-{what.replace(' ', '-')}"
        res = CliRunner().invoke(train_main, ["--tower", *args, "--out", str(out), "--quiet", *sets(TINY)])
        lines = [s for s in res.output.splitlines() if s.strip()]
        assert res.exit_code in (1, 2) and words in res.output, (what, res.output)
        assert len([s for s in lines if s.startswith("Error")]) == 1, (what, res.output)
        assert not out.exists(), what
