"""The exit codes of the four stpr commands: one convention, so a supervisor or a script
reads `stpr-train`, `stpr-export`, `stpr-run` and `stpr-classes` alike."""
from __future__ import annotations

import signal

import click

EXIT_OK = 0
EXIT_ERROR = 1  # refused or failed: bad input (run, bundle, data, source), missing backend
EXIT_USAGE = 2  # bad command line: an option's value or combination (click's own code for usage errors)
EXIT_STREAM = 3  # stpr-run only: the source failed mid-way, results so far kept
EXIT_WRITE = 4  # an output could not be written (full disk, read-only, I/O error); nothing half-written kept
EXIT_NOT_LEARNED = 5  # stpr-run --learn only: the run ended without learning its class (reason printed)
EXIT_INTERRUPT = 128 + signal.SIGINT  # 130, Ctrl-C
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143, the shell's code for "ended by SIGTERM"

_COMMON = {
    EXIT_OK: "done",
    EXIT_ERROR: "refused or failed: bad input, missing backend",
    EXIT_USAGE: "bad command line (an option's value or combination)",
    EXIT_WRITE: "a file could not be written (full disk, read-only, I/O error): one line names it; "
                "nothing half-written is kept",
    EXIT_INTERRUPT: "Ctrl-C",
    EXIT_SIGTERM: "SIGTERM",
}


def exit_codes_help(**specific: str) -> str:
    """The 'Exit codes' block of a command's --help: the shared meanings, with a
    command's own wording by code name (`ok=`, `error=`, `stream=`, `learn=`, `interrupt=`, ...)."""
    names = {"ok": EXIT_OK, "error": EXIT_ERROR, "usage": EXIT_USAGE, "stream": EXIT_STREAM,
             "write": EXIT_WRITE, "learn": EXIT_NOT_LEARNED, "interrupt": EXIT_INTERRUPT, "sigterm": EXIT_SIGTERM}
    unknown = set(specific) - set(names)
    if unknown:
        raise ValueError(f"unknown exit code names {sorted(unknown)}; valid: {sorted(names)}")
    meaning = dict(_COMMON)
    meaning.update({names[k]: v for k, v in specific.items()})
    lines = ["\b", "Exit codes (the same in stpr-train, stpr-export, stpr-run and stpr-classes):"]
    lines += [f"  {code:<4} {text}" for code, text in sorted(meaning.items())]
    return "\n".join(lines)


def click_error(message: str, code: int) -> click.ClickException:
    """A `click.ClickException` (printed as one `Error: ...` line) that exits with `code`."""
    e = click.ClickException(message)
    e.exit_code = code
    return e
