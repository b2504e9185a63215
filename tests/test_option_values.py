"""Every float option of every stpr command refuses nan and inf in one line with exit 2
(float() accepts both and a NaN passes any range check: a NaN --timeout gave a traceback,
a NaN --watch-interval spun the watcher at 100 % CPU, an inf one killed its thread)."""
import click
import pytest
from click.testing import CliRunner

from stpr.export.cli import main as export_main
from stpr.runtime.cli.classes_cli import main as classes_main
from stpr.runtime.cli.learn_cli import main as learn_main
from stpr.runtime.cli.run_cli import main as run_main
from stpr.runtime.exits import EXIT_USAGE
from stpr.train.cli import main as train_main


def _float_options() -> list[tuple[click.Command, list[str], str]]:
    """(command, sub-command path, option) for every option whose type is a float."""
    found = []

    def walk(cmd: click.Command, path: list[str], top: click.Command) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name], top)
            return
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(p.type, click.types.FloatParamType):
                found.append((top, path, p.opts[0]))

    for main in (train_main, export_main, run_main, learn_main, classes_main):
        walk(main, [], main)
    return found


FLOAT_OPTIONS = _float_options()


def test_the_float_options_are_found():
    names = {opt for _, _, opt in FLOAT_OPTIONS}
    assert {"--lambda", "--timeout", "--watch-interval", "--unknown-threshold", "--learn-after"} <= names


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("main, path, option", FLOAT_OPTIONS, ids=[o for _, _, o in FLOAT_OPTIONS])
def test_a_non_finite_value_is_one_line_and_exit_2(main, path, option, value):
    # The option alone: click converts the options given, in their order, before it looks for missing ones.
    res = CliRunner().invoke(main, [*path, option, value])
    assert res.exit_code == EXIT_USAGE, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], res.output
    assert "not a finite number" in errors[0] or "not in the range" in errors[0], res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("option", ["--timeout", "--watch-interval", "--learn-after"])
def test_a_wait_past_a_day_is_refused(option):
    # threading's wait and OpenCV's millisecond timeouts overflow on huge finite values too
    res = CliRunner().invoke(run_main, [option, "1e300"])
    assert res.exit_code == EXIT_USAGE and "not in the range" in res.output, res.output
