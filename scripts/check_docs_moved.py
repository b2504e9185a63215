#!/usr/bin/env python3
"""Check that every measured figure of an old README survives in the current docs. Prints JSON.

The README was split into docs/ (issue "A house others can carry on"). This reads the
README at a git revision and collects its figures:

- every number of two or more characters (`97.8`, `34`, `1.005`, `2479`; single digits
  are too common to mean anything), and
- every `mean ± spread` pair written out (`34.6 ± 6.8`), which must survive as a pair;

then looks for each in README.md, CONTRIBUTING.md and docs/*.md as they are now. It
exits 1 and lists what is missing when anything is.

    python scripts/check_docs_moved.py [--rev 1355624]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
PAIR = re.compile(r"-?\d+(?:\.\d+)? ± \d+(?:\.\d+)?")


def figures(text: str) -> tuple[set[str], set[str]]:
    numbers = {n.rstrip(",") for n in NUMBER.findall(text) if len(n.rstrip(",")) >= 2}
    return numbers, set(PAIR.findall(text))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", default="1355624", help="the revision of the old README")
    args = p.parse_args()
    old = subprocess.run(["git", "show", f"{args.rev}:README.md"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    new = "\n".join(f.read_text(encoding="utf-8") for f in
                    [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
                    if f.is_file())
    (old_numbers, old_pairs), (new_numbers, new_pairs) = figures(old), figures(new)
    missing = {"numbers": sorted(old_numbers - new_numbers), "pairs": sorted(old_pairs - new_pairs)}
    print(json.dumps({"rev": args.rev, "numbers": len(old_numbers), "pairs": len(old_pairs),
                      "missing": missing}, indent=2))
    return 1 if missing["numbers"] or missing["pairs"] else 0


if __name__ == "__main__":
    sys.exit(main())
