#!/usr/bin/env python3
"""Convert a vCLIMB-style pickled task file into JSON once, so training never unpickles.

    python scripts/data/convert_task_file.py tasks.pkl [--out tasks.json]

The pickle must hold a list of tasks, each a list of class names or a dict keyed by
class name. Only convert files you trust: reading a pickle can run code.
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path


def convert(src: Path, dst: Path) -> list[list[str]]:
    with open(src, "rb") as f:
        raw = pickle.load(f)  # noqa: S301 - the point of this one-off, user-run script
    tasks = [[str(c) for c in (t.keys() if isinstance(t, dict) else t)] for t in raw]
    tmp = dst.with_name(f".tmp-{dst.name}")
    tmp.write_text(json.dumps(tasks, indent=1))
    tmp.replace(dst)
    return tasks


EPILOG = """Prints one JSON line: the number of tasks and classes written. Takes under 1 s on this machine
(2 CPU cores)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tasks = convert(args.src, args.out or args.src.with_suffix(".json"))
    print(json.dumps({"tasks": len(tasks), "classes": sum(len(t) for t in tasks)}))


if __name__ == "__main__":
    main()
