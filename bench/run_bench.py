"""Benchmark: the real bot process against the fake Telegram and fake KIE servers.

    .venv/bin/python bench/run_bench.py            # full run, < 10 minutes
    .venv/bin/python bench/run_bench.py --quick    # smaller numbers, < 2 minutes

Only 127.0.0.1 traffic. See bench/README.md for what each row means.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
