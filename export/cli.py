"""`stpr-export RUN_DIR --out BUNDLE`: a thin layer over `stpr.export.export_run`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from stpr.runtime.atomic import LockHeld, as_write_error, exclusive, write_error_line
from stpr.runtime.bundle.manifest import BundleError
from stpr.runtime.exits import EXIT_INTERRUPT, EXIT_SIGTERM, EXIT_WRITE, click_error, exit_codes_help
from stpr.runtime.io.signals import InterruptibleCommand, Terminated, sigterm_as_interrupt
from stpr.train.errors import StprError, missing_extra

EPILOG = exit_codes_help(
    ok="done: the bundle is written (and published)",
    error="refused or failed: not a run, unfinished task, failed parity, another export writing --out",
    write="the bundle could not be written (full disk, read-only): no bundle and no temp folder is left",
    interrupt="Ctrl-C: no bundle was written, the work folder is removed",
    sigterm="SIGTERM: as Ctrl-C")


MIN_OPSET = 17  # as stpr.export.onnx_export.MIN_OPSET, which imports torch: not before the extra is checked


def _check_opset(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < MIN_OPSET:
        raise click.BadParameter(f"{value} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    try:
        from .onnx_export import max_opset
    except ModuleNotFoundError:  # no [export] extra: the command says so next
        return value
    if value > (newest := max_opset()):
        raise click.BadParameter(f"{value} is newer than this torch exports; give {MIN_OPSET} to {newest}")
    return value


@click.command(cls=InterruptibleCommand, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 100}, epilog=EPILOG)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--fp16", is_flag=True, help="Also write mixed-precision *.fp16.onnx twins (parity-checked).")
@click.option("--task", type=int, help="Export the model as it stood after task N [last finished].")
@click.option("--opset", type=int, default=MIN_OPSET, show_default=True, callback=_check_opset,
              help=f"ONNX opset (>= {MIN_OPSET}).")
@click.option("--engine", is_flag=True, help="Build TensorRT engines here (needs tensorrt and a GPU; with --fp16).")
@click.option("--force", is_flag=True, help="Replace a bundle already in --out.")
@click.option("--parity-clips", type=click.IntRange(min=1), default=16, show_default=True,
              help="Clips in the parity check (at least 1).")
@click.option("--int8", is_flag=True, help="Also write int8 experts for CPUs (experts.int8.onnx, parity-checked).")
@click.option("--no-text", is_flag=True, help="Leave out the text tower, frozen image tower and tokenizer "
              "(smaller bundle; stpr-classes cannot add classes by name to it).")
@click.option("--head-sums", type=click.Choice(["float64", "float32", "none"]), default="float64", show_default=True,
              help="Store the analytic head's sums (G, C) so stpr-learn can add classes on the device; float32 "
                   "halves them (M = 2048: 16 MB instead of 32), none leaves them out.")
@click.option("--stpr-files", is_flag=True, help="A head-alone run: also ship StPR's adapted backbone and experts "
              "(parity-checked), which its bundle never runs [left out].")
@click.option("--publish", type=click.Path(path_type=Path),
              help="Then point this symlink at the bundle, atomically (what `stpr-run --watch` follows).")
def main(run_dir: Path, out: Path, fp16: bool, task: int | None, opset: int, engine: bool, force: bool,
         parity_clips: int, int8: bool, no_text: bool, head_sums: str, stpr_files: bool, publish: Path | None) -> None:
    """Export a trained run to an ONNX bundle that stpr-run serves without PyTorch.

    Needs the [export] install extra (torch, open_clip_torch and onnx), except for a run of the
    head alone trained without torch (on an ONNX tower): its bundle is written with the base install."""
    from .head_only import is_head_run

    if is_head_run(run_dir):
        _export_head_run(run_dir, out, task, force, parity_clips, head_sums, publish,
                         {"--fp16": fp16, "--int8": int8, "--engine": engine})
        return
    try:
        from .bundle import export_run
    except ModuleNotFoundError as e:
        raise click.ClickException(str(missing_extra(e, "stpr-export", "export"))) from None

    if engine and not fp16:
        raise click.UsageError("--engine builds TensorRT engines from the fp16 ONNX; pass --fp16 with it")
    if publish is not None and publish.exists() and not publish.is_symlink():  # before minutes of export
        raise click.UsageError(f"--publish {str(publish)!r} exists and is not a symlink; pick a new path "
                               "(it becomes a symlink to the bundle)")
    logger = logging.getLogger("stpr")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # each onnxruntime session's "providers in use" line: a dozen per export, all CPU or all CUDA
    logging.getLogger("stpr.runtime.model.backends").setLevel(logging.WARNING)
    res = _write_bundle(out, lambda: export_run(
        run_dir, out, fp16=fp16, task=task, opset=opset, engine=engine, force=force, parity_clips=parity_clips,
        int8=int8, text=not no_text, head_sums=None if head_sums == "none" else head_sums, stpr_files=stpr_files))
    click.echo(f"Bundle: {res.bundle}")
    sizes = {name: path.stat().st_size for name, path in res.files.items()}
    for name, size in sorted(sizes.items()):
        click.echo(f"  {name:<28} {size / 2**20:9.2f} MiB")
    click.echo(f"Bundle size: {sum(sizes.values()) / 2**20:.2f} MiB in {len(sizes)} files" + (
        "" if "backbone" in res.manifest or "head" not in res.manifest else
        " (the head alone: StPR's backbone and experts left out; --stpr-files ships them)"))
    for prec in ("fp32", "fp32_fused", "fp16", "fp16_fused", "int8", "fp32_head", "fp16_head"):
        if prec in res.parity:  # what the bundle ships: a head-alone bundle has only the head's
            p = res.parity[prec]
            what = f"{prec.split('_')[0]} head" if prec.endswith("_head") else prec
            click.echo(f"Parity {what}: top-1 agreement {p['top1_agreement']:.2%}, feature max |diff| "
                       f"{p['feature_max_abs_diff']:.2e}, {'probability' if 'head' in prec else 'logit'} max |diff| "
                       f"{p['logit_max_abs_diff']:.2e} ({res.parity['clips']} {res.parity['source']})")
    _echo_openset(res.openset)
    if "text_tower" in res.parity:
        t = res.parity["text_tower"]
        click.echo(f"Parity text tower: fp32 max |diff| {t['fp32']['max_abs_diff']:.2e}"
                   + (f", fp16 top-1 agreement {t['fp16']['top1_agreement']:.2%}" if "fp16" in t else "")
                   + f" ({t['prompts']} class prompts)")
    click.echo(f"Total export time: {sum(res.timings_s.values()):.1f} s")
    _publish(res.bundle, publish)


def _write_bundle(out: Path, make: Callable[[], Any]) -> Any:
    """`make()` (an export into `out`) under `out`'s lock, each way it can fail said in one line."""
    # Two exports to one --out at once: the second is refused at the start (it used to
    # replace the first's bundle at the end, both exiting 0, --force or not).
    lock = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with sigterm_as_interrupt(), exclusive(lock):  # a stopped export still removes its temp folder
            return make()
    except StprError as e:
        raise click.ClickException(str(e)) from None
    except LockHeld:
        raise click.ClickException(f"another stpr-export is writing --out {str(out)!r} now (it holds "
                                   f"{str(lock)!r}); wait for it to finish, or pick another --out") from None
    except (OSError, RuntimeError) as e:
        if (err := as_write_error(e, out.parent)) is None:
            raise
        raise click_error(write_error_line(err, f"the bundle {str(out)!r}", " (no bundle written)"),
                          EXIT_WRITE) from None
    except KeyboardInterrupt as e:
        click.echo(f"\n{'terminated' if isinstance(e, Terminated) else 'interrupted'}: no bundle was written", err=True)
        sys.exit(EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_INTERRUPT)


def _export_head_run(run_dir: Path, out: Path, task: int | None, force: bool, parity_clips: int, head_sums: str,
                     publish: Path | None, refused: dict[str, bool]) -> None:
    """A head-only bundle from a torch-free run (export/head_only.py), without torch."""
    from .head_only import export_head_run

    asked = [name for name, on in refused.items() if on]
    if asked:
        raise click.UsageError(f"{', '.join(asked)}: {str(run_dir)!r} is a head run on an ONNX tower (trained "
                               "without torch); its bundle ships that tower as it is, in float32: drop "
                               f"{' and '.join(asked)}")
    res = _write_bundle(out, lambda: export_head_run(run_dir, out, task=task, force=force, parity_clips=parity_clips,
                                                     head_sums=None if head_sums == "none" else head_sums))
    click.echo(f"Bundle: {res['bundle']} (the head alone on its ONNX tower; no torch needed to write or run it)")
    for name, path in sorted(res["files"].items()):
        click.echo(f"  {name:<28} {path.stat().st_size / 2**20:9.2f} MiB")
    p = res["parity"]["fp32_head"]
    click.echo(f"Parity: the bundle on the runtime against the run's head: top-1 agreement {p['top1_agreement']:.2%}, "
               f"probability max |diff| {p['prob_max_abs_diff']:.2e} ({res['parity']['clips']} clips)")
    _echo_openset(res["openset"])
    _publish(res["bundle"], publish)


def _echo_openset(o: dict[str, Any] | None) -> None:
    """The export's `Unknown:` line: the calibrated score and threshold, and how it measured."""
    if not o:
        click.echo("Unknown: not calibrated (the run's held-out clips could not be read); stpr-run will not "
                   "report unknown")
        return
    measured = (f"; AUROC {o['auroc']:.3f}, FPR {o['fpr_at_tpr']:.3f} at {o['target_tpr']:.0%} TPR on "
                f"{sum(o['unknown_clips'].values())} clips of never-trained classes" if "auroc" in o else "")
    click.echo(f"Unknown: {o['score']} < {o['threshold']:.4g} (keeps {o['target_tpr']:.0%} of held-out known "
               f"clips){measured} (openset.json)")


def _publish(bundle: Path, publish: Path | None) -> None:
    """--publish: point the symlink at the written bundle (a failure says the bundle is kept)."""
    if publish is None:
        return
    from stpr.runtime.bundle.publish import publish as publish_bundle

    try:
        publish_bundle(bundle, publish)
    except (OSError, BundleError) as e:
        raise click_error(f"the bundle is written, but --publish failed: {e}",
                          EXIT_WRITE if isinstance(e, OSError) else 1) from None
    click.echo(f"Published: {publish} -> {bundle}")


if __name__ == "__main__":
    main()
