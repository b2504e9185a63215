"""The `stpr-run` console entry: process settings that must come before numpy loads, then the CLI."""
from __future__ import annotations

import os


def main() -> None:
    # One OpenBLAS thread unless the user chose otherwise. The router's matrices are tiny,
    # and idle OpenBLAS threads contend with onnxruntime's pool for a device's few cores:
    # on 2 cores the router's median step was 0.5 ms with one thread, 1 to 23 ms without.
    # OpenBLAS reads this only when numpy loads, hence a separate entry module.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .cli.run_cli import main as cli_main

    cli_main()
