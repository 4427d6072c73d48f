"""Run the benchmark: `.venv/bin/python bench/run.py [--quick] [--report-only] [--no-readme] [--only W]...`.

Starts every server it needs and stops them all on the way out (also on error or Ctrl-C)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` and `tests` importable

from bench.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
