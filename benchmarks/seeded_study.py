"""Compatibility wrapper: the seeded study is now ``pivad study`` (docs/study.md).

    python benchmarks/seeded_study.py ARGS...   ==   pivad study --preset demo ARGS...

The old flags all still work (``--train-seeds`` is ``--seeds``); as before, the data is always the
synthetic preset (``--preset``, ``demo`` unless given), whatever ``-c`` names.
"""

from __future__ import annotations

import sys

from pivad.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--preset" or a.startswith("--preset=") for a in argv):
        argv = ["--preset", "demo", *argv]
    sys.exit(main(["study", *argv]))
