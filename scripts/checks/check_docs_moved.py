#!/usr/bin/env python3
"""Check that every figure of an old README survives in the current docs. Prints JSON.

The README was split into docs/ (issue 16). This reads README.md at a git revision
(default 1355624, the last long README) and collects its figures:

- numbers: every number token outside a word, with its decimals, thousands commas and
  exponent (`97.8`, `0.92`, `1.005` of `1.005×`, `2,479`, `1.2e-7`, `1e-3`), that is at
  least two characters long. Single digits (`4+4x4`, `T = 8`) are too common to say
  anything. Digits glued to letters are names, not figures (`fp16`, `ucf101`), except
  after a number and `x` (`320x240` gives 320 and 240);
- pairs: every `mean ± spread` written out (`34.6 ± 6.8`, `-0.1±0.5`, spaces
  normalised), which must survive as a pair, not as two loose numbers;

then looks for each in README.md, CONTRIBUTING.md (when there is one) and docs/*.md as
they are now. It exits 1 and lists what is missing when anything is.

    python scripts/checks/check_docs_moved.py [REV]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"(?:(?<![\w.])|(?<=\d[x×]))\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")
PAIR = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)")


def numbers(text: str) -> list[str]:
    """The number tokens of `text`, in order, repeats kept."""
    return [n for n in NUMBER.findall(text) if len(n) >= 2]


def pairs(text: str) -> list[str]:
    """The `mean ± spread` pairs of `text`, written `a ± b`."""
    return [f"{a} ± {b}" for a, b in PAIR.findall(text)]


def new_text() -> str:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages if p.is_file())


EPILOG = """Prints one JSON object: the old README's figures (numbers, mean ± spread pairs) and those
missing from the docs now; exits 1 if any is. Takes about 1 s on this machine (2 CPU cores);
needs the git history."""


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], epilog=EPILOG)
    p.add_argument("rev", nargs="?", default="1355624", help="git revision of the old README (default 1355624)")
    args = p.parse_args()
    old = subprocess.run(["git", "show", f"{args.rev}:README.md"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    new = new_text()
    old_numbers, old_pairs = numbers(old), pairs(old)
    missing_numbers = sorted(set(old_numbers) - set(numbers(new)), key=lambda n: (float(n.replace(",", "")), n))
    missing_pairs = sorted(set(old_pairs) - set(pairs(new)))
    print(json.dumps({
        "rev": args.rev,
        "old_readme_lines": old.count("\n"),
        "numbers": {"occurrences": len(old_numbers), "distinct": len(set(old_numbers)),
                    "missing": missing_numbers},
        "pairs": {"occurrences": len(old_pairs), "distinct": len(set(old_pairs)), "missing": missing_pairs},
    }, indent=2, ensure_ascii=False))
    return 1 if missing_numbers or missing_pairs else 0


if __name__ == "__main__":
    sys.exit(main())
