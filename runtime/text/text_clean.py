"""The text cleaning open_clip applies before BPE, in the standard library only.

open_clip's `SimpleTokenizer` (clean="lower") runs `ftfy.fix_text`, `html.unescape` twice,
strip, whitespace collapse and lower case. The device has no ftfy, so this replicates the
ftfy 6 steps that change ordinary names (HTML entities, C1 controls, Latin ligatures,
full/half width forms, curly quotes, line breaks, surrogates, terminal escapes, control
characters, NFC), in ftfy's order and with its per-line "is there a '<'" rule. Not
replicated: ftfy's mojibake repair (text decoded in the wrong encoding, e.g. "CafÃ©"),
which an action name typed on a device does not contain.
"""
from __future__ import annotations

import html
import html.entities
import re
import unicodedata

_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_ANSI = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_C1 = re.compile(r"[\x80-\x9f]")
_SINGLE_QUOTE = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTE = re.compile("[\u201c-\u201f]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LIGATURES = str.maketrans({
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
    "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
})
_WIDTH = str.maketrans({0x3000: " ", **{i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0)
                                        if unicodedata.normalize("NFKC", chr(i)) != chr(i)}})
_CONTROL = str.maketrans(dict.fromkeys([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F,
                                        *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]))


def _html_entities() -> dict[str, str]:
    """ftfy's table: the HTML5 entities that end in ';', plus the all-lowercase ones written in
    capitals where that is unambiguous (`&EACUTE;` -> 'É')."""
    out = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            out["&" + name] = char
            upper = "&" + name.upper()
            if name == name.lower() and html.unescape(upper) == upper:
                out[upper] = char.upper()
    return out


_ENTITIES = _html_entities()


def _entity(match: re.Match[str]) -> str:
    text = match.group(0)
    if text in _ENTITIES:
        return _ENTITIES[text]
    if text.startswith("&#"):
        out = html.unescape(text)
        return text if ";" in out else out  # only a fully decoded reference counts
    return text


def _c1(match: re.Match[str]) -> str:
    # ftfy's "sloppy" windows-1252: the five bytes cp1252 leaves undefined stay as they are.
    try:
        return match.group(0).encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:
        return match.group(0)


def _pair(match: re.Match[str]) -> str:
    hi, lo = (ord(c) for c in match.group(0))
    return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))


def _fix_segment(text: str, unescape: bool) -> str:
    while True:  # ftfy repeats its steps until nothing changes
        before = text
        if unescape:
            text = _HTML_ENTITY.sub(_entity, text)
        text = _C1.sub(_c1, text).translate(_LIGATURES).translate(_WIDTH)
        text = _SINGLE_QUOTE.sub("'", _DOUBLE_QUOTE.sub('"', text))
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
        text = text.replace("\u2029", "\n").replace("\u0085", "\n")
        if _SURROGATE.search(text):
            text = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_pair, text))
        text = _ANSI.sub("", text).translate(_CONTROL)
        text = unicodedata.normalize("NFC", text)
        if text == before:
            return text


def fix_text(text: str) -> str:
    """ftfy.fix_text's effect on non-mojibake text: line by line, and HTML entities are
    decoded only until the first line that holds a '<' (ftfy's "auto" rule)."""
    out, pos, unescape = [], 0, True
    while pos < len(text):
        end = text.find("\n", pos) + 1 or len(text)
        segment = text[pos:end]
        unescape = unescape and "<" not in segment
        out.append(_fix_segment(segment, unescape))
        pos = end
    return "".join(out)


def clean_lower(text: str) -> str:
    """open_clip's `_clean_lower`: fix, unescape HTML twice, collapse whitespace, lower case."""
    text = html.unescape(html.unescape(fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


def clean_class_name(name: str) -> str:
    """Dataset folder name -> words for a prompt, for training and the device alike, so a
    name added on the device is compared and prompted like a trained one.

    UCF101 CamelCase is split ("ApplyEyeMakeup" -> "apply eye makeup"), underscores
    and dashes (HMDB51, Kinetics, ours) become spaces, runs of capitals stay one word
    ("PlayingDaf" -> "playing daf", "TVShow" -> "tv show").
    """
    s = re.sub(r"[_\-]+", " ", name.strip())
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", s)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", " ", s)
    return re.sub(r"\s+", " ", s).strip().lower()
