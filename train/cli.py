"""`stpr-train`: run the StPR incremental protocol and write a run directory.

With no arguments it runs the built-in synthetic demo (configs/demo.yaml).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import click

from stpr.runtime.atomic import as_write_error, write_error_line
from stpr.runtime.cli.click_types import FiniteFloat
from stpr.runtime.contract import DISTILL_MODES, HEAD_CHOICES, MAX_SEED, ROUTING_MODES
from stpr.runtime.exits import EXIT_INTERRUPT, EXIT_SIGTERM, EXIT_WRITE, click_error, exit_codes_help
from stpr.runtime.io.signals import InterruptibleCommand, Terminated, sigterm_as_interrupt

from .errors import StprError, missing_extra
from .report import format_report

log = logging.getLogger("stpr")

# CLI option -> config key. What users change most; everything else via --set.
_OPTION_KEYS = {
    "dataset": "data.dataset",
    "data_root": "data.root",
    "protocol": "data.protocol",
    "model": "model.name",
    "pretrained": "model.pretrained",
    "routing": "method.routing",
    "distill": "method.distill",
    "head": "head.mode",
    "lambda_": "method.lambda_fssd",
    "batch_size": "optim.batch_size",
    "seed": "seed",
    "split": "data.split",
    "device": "device",
    "tower": "model.tower",
    "tower_size": "model.tower_size",
    "tower_mean": "model.tower_mean",
    "tower_std": "model.tower_std",
}


def _channels(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """`--tower-mean 0.485,0.456,0.406` -> three floats."""
    if value is None:
        return None
    try:
        out = [float(v) for v in value.split(",")]
    except ValueError:
        out = []
    if len(out) != 3:
        raise click.BadParameter(f"{value!r}: give 3 comma-separated numbers (R,G,B), e.g. 0.485,0.456,0.406")
    return out


def _torch_free(cfg: Any, out: Path, resume: bool) -> bool:
    """Whether this run trains without torch (train/head_run.py): a run that did so already, one on
    `--tower FILE.onnx`, or any run where torch is not installed (the head alone; others are
    refused there with the extra they need)."""
    import importlib.util

    from .run_dir import NUMPY_CHECKPOINT, TORCH_CHECKPOINT, checkpoint_kinds

    if resume:
        kinds = checkpoint_kinds(out)
        if kinds:
            return NUMPY_CHECKPOINT in kinds and TORCH_CHECKPOINT not in kinds
    return bool(cfg.model.tower) or importlib.util.find_spec("torch") is None


def _tqdm_progress(it: Iterable, desc: str, total: int) -> Iterable:
    from tqdm.auto import tqdm

    # tqdm.auto's bar calls iter() on what it wraps when it is made, and again when the
    # loop starts. On a DataLoader each iter() draws a seed from torch's global RNG, so the
    # bar shifted every random number after it: --quiet changed the results. Wrapping an
    # iterator, made here once, draws exactly what the loop without a bar draws.
    return tqdm(iter(it), desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)


def _overrides(opts: dict[str, Any], epochs: str | None, sets: tuple[str, ...]) -> dict[str, Any]:
    from .config_load import parse_set

    out = {key: opts[name] for name, key in _OPTION_KEYS.items() if opts.get(name) is not None}
    if epochs is not None:
        parts = epochs.split(",")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or min(values, default=0) < 1:
            raise click.UsageError(f"--epochs {epochs!r}: give N (every task) or BASE,INCREMENTAL, e.g. 60,30")
        out["optim.epochs_base"], out["optim.epochs_incremental"] = values[0], values[-1]
    try:
        out.update(parse_set(list(sets)))
    except StprError as e:  # --set without '=': the command line itself is wrong
        raise click.UsageError(str(e)) from None
    return out


class _RunLog(logging.FileHandler):
    """train.log, opened (and its folder made) only when the first record arrives, so a
    run refused while building leaves no folder behind."""

    def _open(self):  # type: ignore[override]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        # logging would print a traceback and train on without its log: a full disk must
        # end the run with its one line instead (the next checkpoint would fail anyway).
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror, self.baseFilename) from None
        super().handleError(record)


def _attach_log_file(run_dir: Path) -> None:
    handler = _RunLog(run_dir / "train.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.addHandler(console)
    log.propagate = False  # open_clip's root-logger warnings install a root handler; keep ours off it


def _saved(out: Path | None) -> str:
    """What a stopped run keeps: --resume continues a run once its config.yaml is written,
    so before that it must not be suggested (it would answer "holds no run")."""
    if out is not None and (out / "config.yaml").is_file():
        return f"finished tasks are saved; continue with: stpr-train --resume --out {out}"
    return "nothing was saved, so there is nothing to resume; run the same command again"


EPILOG = exit_codes_help(
    ok="done: every task trained and evaluated",
    error="refused or failed: bad config (file or --set value), data, model or run folder",
    usage="bad command line (an option's syntax or combination, e.g. --epochs, --set, --resume)",
    write="the run folder could not be written (full disk, read-only): finished tasks are kept",
    interrupt="Ctrl-C: finished tasks are saved; continue with --resume",
    sigterm="SIGTERM: as Ctrl-C")


@click.command(cls=InterruptibleCommand, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 100}, epilog=EPILOG)
@click.option("--config", "config_name", default=None,
              help="Built-in config (demo, paper, ucf101_51+10x5, ...) or a YAML file "
                   "[demo for synthetic data, paper for a real --dataset].")
@click.option("--dataset", help="Dataset reader, e.g. synthetic.")
@click.option("--data-root", help="Dataset folder.")
@click.option("--split", type=click.IntRange(1, 3), help="UCF101/HMDB51 official split [1].")
@click.option("--protocol", help="Tasks as 'A+BxC' (base A, then C tasks of B classes) or 'BxC'.")
@click.option("--model", help="open_clip model: ViT-B-16-quickgelu (paper), stpr-tiny (demo).")
@click.option("--pretrained", help="none | openai | synthetic-shapes (stpr-tiny, packaged) | PATH to a weights file.")
@click.option("--tower", help="FILE.onnx: any image encoder (N, 3, H, W) -> (N, D) for the head alone, without "
              "torch (docs/towers.md).")
@click.option("--tower-size", type=int, help="--tower's input side in pixels [from FILE.json beside it].")
@click.option("--tower-mean", callback=_channels, help="--tower's RGB mean on [0, 1] pixels, e.g. 0.485,0.456,0.406 "
              "[from FILE.json].")
@click.option("--tower-std", callback=_channels, help="--tower's RGB std, e.g. 0.229,0.224,0.225 [from FILE.json].")
@click.option("--routing", type=click.Choice(ROUTING_MODES),
              help="Expert routing: td (calibrated), td-raw (the paper's Eq. 11), avg, clip, adapter, "
                   "oracle (analysis).")
@click.option("--distill", type=click.Choice(DISTILL_MODES), help="Adapter distillation.")
@click.option("--head", type=click.Choice(HEAD_CHOICES),
              help="Analytic head: none (StPR, the paper), alone, route-hard, route-soft, fuse.")
@click.option("--lambda", "lambda_", type=FiniteFloat(), help="Weight of the FSSD loss.")
@click.option("--epochs", help="Epochs: N for every task, or BASE,INCREMENTAL (paper: 60,30).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Clips per step (at least 1).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help=f"Seed for class order, init and shuffling "
              f"(0 to {MAX_SEED}).")
@click.option("--device", help="auto | cpu | cuda | cuda:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory [runs/<dataset>-<time>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last finished task.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other config key, e.g. optim.lr=0.05.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(config_name: str | None, epochs: str | None, out: Path | None, resume: bool, sets: tuple[str, ...],
         quiet: bool, **opts: Any) -> None:
    """Train StPR task after task and evaluate every seen task after each one.

    The analytic head alone (the demo's default) needs no torch: without it, or with --tower,
    it runs on onnxruntime."""
    from . import run_dir as run_dir_mod
    from .config_load import load_config

    try:
        overrides = _overrides(opts, epochs, sets)
        if resume:
            if out is None:
                raise click.UsageError("--resume needs --out DIR, the run directory to continue")
            extra = sorted(set(overrides) - {"device"})
            if extra or config_name is not None:
                raise click.UsageError(f"--resume continues the saved config of {out}; drop "
                                       f"{', '.join(extra) or '--config'}")
        if config_name is None:  # the demo's tiny random model is for synthetic data only
            config_name = "demo" if overrides.get("data.dataset", "synthetic") == "synthetic" else "paper"
        cfg = None if resume else load_config(config_name, overrides)
        if out is None:
            out = Path("runs") / f"{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        # Under torchrun only rank 0 checks, logs and writes; the others train in step.
        main_rank = int(os.environ.get("RANK", "0")) == 0
        saved = run_dir_mod.saved_config(out) if resume else None
        torch_free = _torch_free(saved or cfg, out, resume)
        if not torch_free:
            try:
                from . import run as run_mod
            except ModuleNotFoundError as e:
                raise click.ClickException(str(missing_extra(e, "stpr-train", "train"))) from None
        if main_rank:
            # Refuse before touching the folder (the log file would create it).
            if not resume:
                run_dir_mod.check_fresh_run_dir(out)
            if torch_free:  # refused configs (StPR without torch) leave no folder either
                from .head_setup import build

                build(saved or cfg)
            _attach_log_file(out)
            click.echo(f"stpr-train: run directory {out}", err=True)
        quiet = quiet or not main_rank
        progress = (lambda it, d, t: it) if quiet else _tqdm_progress
        with sigterm_as_interrupt():  # stopped by a service manager: same clean exit as Ctrl-C
            if torch_free:
                from . import head_run

                metrics = head_run.run(cfg, out, resume=resume, device=overrides.get("device"))
            else:
                metrics = run_mod.run(cfg, out, resume=resume, progress=progress, device=overrides.get("device"))
                run_mod.dist.shutdown()
    except StprError as e:
        raise click.ClickException(str(e)) from None
    except (OSError, RuntimeError) as e:
        if (err := as_write_error(e, out)) is None:
            raise
        raise click_error(f"{write_error_line(err)}; {_saved(out)}", EXIT_WRITE) from None
    except KeyboardInterrupt as e:
        click.echo(f"\ninterrupted; {_saved(out)}", err=True)
        sys.exit(EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_INTERRUPT)
    if main_rank:
        click.echo(format_report(metrics, out))


if __name__ == "__main__":
    main()
