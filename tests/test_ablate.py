"""scripts/studies/ablate.py end to end on a tiny protocol: tables, consistency, reuse."""
import csv
import json
import time
from pathlib import Path

import pytest
from helpers import load_script

TINY = ["--quick", "--set", "data.protocol=4+4x1", "--set", "data.clips_per_class_train=4",
        "--set", "data.clips_per_class_test=2", "--set", "optim.batch_size=8", "--set", "device=cpu",
        "--lambdas", "0.5", "10", "--seeds", "0", "1"]
RUNS = ["distill_fssd", "distill_uniform", "distill_none", "joint", "lambda_0.5"]
VARIANTS = {
    "components": ["frame mean only", "adapters + TD-MoE, no distillation", "FSSD + avg routing",
                   "full StPR (FSSD + TD-MoE)", "joint training (upper bound: every class in one task)"],
    "routing": ["td", "td-raw", "avg", "clip", "adapter",
                "oracle (analysis-only upper bound: uses the true task id)"],
    "distillation": ["fssd", "uniform", "none"],
    "lambda": ["0.5", "10"],
}


@pytest.fixture(scope="module")
def ablate():
    return load_script("studies/ablate")


def _files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*.pt")}


def test_ablation_tables_and_reuse(ablate, tmp_path, capsys):
    out = tmp_path / "abl"
    argv = [*TINY, "--out", str(out)]
    assert ablate.main(argv) == 0
    md_stdout = capsys.readouterr().out
    md = (out / "ablation.md").read_text()
    assert md.strip() == md_stdout.strip()
    assert "Protocol 4+4x1" in md and "stpr-tiny" in md and "epochs 1/1" in md and "seeds 0 1" in md
    assert "python scripts/studies/ablate.py --quick" in md and "--lambdas 0.5 10" in md
    for title in ("Table 3", "Table 4", "Table 5", "Table 6"):
        assert f"## {title}" in md

    rows = list(csv.DictReader((out / "ablation.csv").open()))
    got = {}
    for r in rows:
        got.setdefault(r["table"], []).append(r["variant"])
        assert r["seeds"] == "2" and 0 <= float(r["acc_mean"]) <= 100 and float(r["acc_std"]) >= 0
        if r["variant"].startswith("joint"):
            assert r["bwf_mean"] == "" and r["task_id_accuracy_mean"] == ""  # one task: nothing to forget or route
        else:
            assert -100 <= float(r["bwf_mean"]) <= 100
        assert f"| {r['variant']} | {float(r['acc_mean']):.1f} ± {float(r['acc_std']):.1f} |" in md
    assert got == VARIANTS
    by = {(r["table"], r["variant"]): r for r in rows}

    # td re-evaluated from the checkpoints is each fssd run's own metrics.json; lambda 10 (the demo's) is that run
    fssd = [json.loads((out / f"seed_{s}" / "distill_fssd" / "metrics.json").read_text()) for s in (0, 1)]
    accs = [m["acc"] for m in fssd]
    assert float(by["routing", "td"]["acc_mean"]) == pytest.approx(sum(accs) / 2)
    assert float(by["routing", "td"]["acc_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2)
    assert float(by["routing", "td"]["task_id_accuracy_mean"]) == pytest.approx(
        sum(m["task_id_accuracy"] for m in fssd) / 2)
    assert float(by["components", "full StPR (FSSD + TD-MoE)"]["acc_mean"]) == pytest.approx(sum(accs) / 2)
    assert float(by["components", "frame mean only"]["acc_mean"]) == pytest.approx(
        sum(m["spatial_only"]["acc"] for m in fssd) / 2)
    assert float(by["lambda", "10"]["acc_mean"]) == pytest.approx(sum(accs) / 2)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seed_0", "seed_1"]
    for seed in ("seed_0", "seed_1"):
        # no lambda_10 run: it is the fssd run
        assert sorted(p.name for p in (out / seed).iterdir() if p.is_dir()) == sorted(RUNS)
        for run in RUNS:
            tasks = 1 if run == "joint" else 2
            assert len(list((out / seed / run / "checkpoints").glob("task_*.pt"))) == tasks

    before, t0 = _files(out), time.perf_counter()
    assert ablate.main(argv) == 0
    assert time.perf_counter() - t0 < 10
    assert _files(out) == before  # nothing retrained
    assert (out / "ablation.md").read_text() == md


def test_refuses_variant_keys_and_other_configs(ablate, tmp_path, capsys):
    assert ablate.main(["--set", "method.distill=none", "--out", str(tmp_path)]) == 2
    assert "per variant" in capsys.readouterr().err
    run_dir = tmp_path / "seed_0" / "distill_fssd"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 5\n")
    assert ablate.main([*TINY, "--out", str(tmp_path)]) == 2
    assert "another config" in capsys.readouterr().err
