"""Every script under scripts/ sits in its group and answers --help at once (torch blocked:
no heavy import before the arguments are parsed), saying what it prints and how long it
takes on the 2-core machine."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "scripts"
SCRIPTS = sorted(ROOT.glob("*/*.py"))
GROUPS = {"bench", "studies", "data", "checks"}
# --help run as `python SCRIPT --help` is, but where `import torch` fails.
BLOCKED = "import runpy, sys; sys.modules['torch'] = None; sys.argv = [sys.argv[1], '--help']; " \
          "sys.path.insert(0, str(__import__('pathlib').Path(sys.argv[0]).parent)); " \
          "runpy.run_path(sys.argv[0], run_name='__main__')"


def test_scripts_live_in_their_groups():
    assert not list(ROOT.glob("*.py")), "a script left at the top of scripts/"
    assert {p.parent.name for p in SCRIPTS} == GROUPS
    bench = {p for p in SCRIPTS if p.name.startswith("bench_")}
    assert bench and bench == {p for p in SCRIPTS if p.parent.name == "bench"}  # CONTRIBUTING's bench/bench_*.py


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_says_what_it_prints_and_how_long_without_torch(script):
    res = subprocess.run([sys.executable, "-c", BLOCKED, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    text = " ".join(res.stdout.split())  # argparse wraps the epilog
    assert text.startswith("usage:"), text[:200]
    assert re.search(r"\bprints\b", text, re.IGNORECASE), f"{script.name}: --help does not say what it prints"
    assert re.search(r"\b\d+(\.\d+)?\s*(s|min|minutes|h|hours)\b", text), f"{script.name}: --help gives no time"
    assert "2 CPU cores" in text, f"{script.name}: --help does not say which machine the time is for"
