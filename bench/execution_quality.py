"""Execution quality only: the benchmark suite without the engine-speed part.

    python bench/execution_quality.py [suite options, e.g. --seeds 10 --markets synthetic]

Kept for its old name; bench/suite.py is the one command (see its docstring).
"""

from __future__ import annotations

import sys

from suite import main

if __name__ == "__main__":
    sys.exit(main(["--no-speed", *sys.argv[1:]]))
