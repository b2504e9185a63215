"""scripts/bench/bench_train.py: the precision asked for is the one the training step runs in."""
from helpers import load_script


def test_bench_train_bf16_runs_the_tower_under_the_trainings_autocast():
    bench = load_script("bench/bench_train")
    out = bench.one("stpr-tiny", "cpu", batch=4, steps=1, precision="bf16", frames_per_clip=2)
    # On CPU optim.amp=auto is fp32: bfloat16 here means the benchmark set optim.amp=bf16.
    assert out["precision"] == "bf16" and out["tower_dtype"] == "bfloat16"
    assert out["frames_per_clip"] == 2 and out["batch_clips"] == 4
    for tag in ("base_task", "incremental_task"):
        assert out[tag]["clips_per_s"] > 0


def test_bench_train_ratios_pair_bf16_with_fp32_of_the_same_model_and_device():
    bench = load_script("bench/bench_train")

    def row(model: str, precision: str, clips: float, mib: float) -> dict:
        task = {"clips_per_s": clips, "peak_gpu_memory_mib": mib}
        return {"model": model, "device": "cuda", "precision": precision, "base_task": task,
                "incremental_task": {**task, "clips_per_s": clips / 2}}

    results = [row("A", "fp32", 10.0, 400.0), row("A", "bf16", 25.0, 200.0), row("B", "bf16", 7.0, 1.0),
               {"model": "C", "device": "cuda", "precision": "fp32", "error": ["boom"]}]
    ratios = bench.precision_ratios(results)
    assert [(r["model"], r["device"]) for r in ratios] == [("A", "cuda")]  # B has no fp32 to compare with
    assert ratios[0]["base_task"] == {"clips_per_s": 2.5, "peak_gpu_memory": 0.5}
    assert ratios[0]["incremental_task"]["clips_per_s"] == 2.5
