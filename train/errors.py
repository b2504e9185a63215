"""The training side's errors: `StprError` (defined with every other error in
`stpr.runtime.errors`) and the message for a missing install extra.

A `StprError` carries a message written for the person at the terminal: what was
wrong, the offending value, and what to do. The CLI prints it without a traceback.
"""
from stpr.runtime.errors import StprError


def missing_extra(err: ModuleNotFoundError, command: str, extra: str) -> StprError:
    """The one-line error for a command whose install extra is missing (a traceback of
    ModuleNotFoundError says what broke, not what to install)."""
    module = (err.name or str(err)).split(".")[0]
    return StprError(f"{command} needs the [{extra}] install extra (Python module {module!r} is missing): "
                     f"pip install 'stpr[{extra}]', or pip install '.[{extra}]' from a clone")
