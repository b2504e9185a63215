"""Which class names a bundle takes: one rule for `stpr-classes` (by name) and `stpr-learn`
(from clips), so a name one of them refuses is refused by the other too.

A name must hold words once cleaned as the prompt sees them ("Circle_Moving-Left" is
"circle moving left"), no control or format character (a newline or tab breaks the jsonl
reader's lines and the overlay text, a zero-width one hides a second class) and no
pictograph (the text tower never saw emoji in training). In a bundle with a text tower its
prompts must fit the tower's context: past the cut, names that differ only there would be
one class.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Sequence

from .text_clean import clean_class_name
from .tokenizer import ClipTokenizer


def _unprintable(name: str) -> str | None:
    """The first control, format or pictograph character of `name`, if any."""
    for c in name:
        cat = unicodedata.category(c)
        if cat.startswith("C") or cat == "So":
            return c
    return None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name (one sentence with the fix), or None."""
    if not clean_class_name(name):
        return f"class name {name!r} is empty; give the action in words, e.g. \"waving hands\""
    if (bad := _unprintable(name)) is not None:
        kind = "a control or invisible character" if unicodedata.category(bad).startswith("C") else "an emoji"
        code = " ".join(filter(None, (f"U+{ord(bad):04X}", unicodedata.name(bad, ""))))
        return f"class name {name!r} holds {kind} ({code}); give the action in plain words, e.g. \"waving hands\""
    return None


def prompt_tokens(tokenizer: ClipTokenizer, templates: Sequence[str], name: str) -> int:
    """The longest of the name's prompts in tokens (start and end included)."""
    words = clean_class_name(name)
    return max(len(tokenizer.encode(t.format(words))) + 2 for t in templates)


def length_problem(tokenizer: ClipTokenizer, templates: Sequence[str], names: Sequence[str]) -> str | None:
    """Why the first name whose prompt is past the text tower's context cannot be a class, or None."""
    for name in names:
        if (n := prompt_tokens(tokenizer, templates, name)) > tokenizer.context_length:
            return (f"class name {name!r} is too long: its prompt is {n} tokens and the text tower reads "
                    f"{tokenizer.context_length}; shorten it (names that differ only past the cut would be one class)")
    return None


def bundle_length_problem(bundle: Path, text: dict[str, Any] | None, names: Sequence[str]) -> str | None:
    """`length_problem` with the tokenizer of the bundle folder `bundle`; None for a bundle
    without a text tower (it embeds no name, so no length cuts one)."""
    if not isinstance(text, dict) or not names:
        return None
    tokenizer = ClipTokenizer.from_file(bundle / text["tokenizer"], int(text["context_length"]))
    return length_problem(tokenizer, text["templates"], names)
