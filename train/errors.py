"""The one exception type users see from the training side.

A `StprError` carries a message written for the person at the terminal: what was
wrong, the offending value, and what to do. The CLI prints it without a traceback.
"""


class StprError(Exception):
    """A user-facing error: bad input, bad config, missing weights or data."""
