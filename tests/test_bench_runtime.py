"""scripts/bench/bench_runtime.py runs on a tiny tower: every variant at every K, against one frame."""
import json

from helpers import load_script


def test_bench_runtime_reports_every_variant_at_each_task_count(capsys):
    bench = load_script("bench/bench_runtime")
    bench.main(["--model", "stpr-tiny", "--tasks", "2", "3", "--repeats", "1", "--no-rss"])
    out = json.loads(capsys.readouterr().out)
    names = [*bench.VARIANTS, *bench.HEAD_VARIANTS]
    assert set(out["step_over_backbone_frame"]) == {f"{n}@K={k}" for n in names for k in (2, 3)}
    assert all(v > 0 for v in out["step_over_backbone_frame"].values())
    passes = out["tower_passes_per_frame"]
    assert passes["head_alone@K=3"] == 1 and passes["head_route_soft@K=3"] == 2 and passes["fp32_fused@K=3"] == 1
    assert out["experts_only_median_ms"]["head_alone@K=3"] == 0.0  # no experts run beside the head alone
    assert out["machine"]["provider"] == "CPUExecutionProvider"
