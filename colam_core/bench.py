"""`python -m colam_core.bench`: a launcher for the training benchmark, benchmarks/training.py of the source checkout.

The benchmark is a tool, not part of the library; it ships with the source checkout, not with the installed package.
"""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]  # the folder holding colam_core/ (and, in a checkout, benchmarks/)
    script = root / "benchmarks" / "training.py"
    if not script.is_file():
        print("the benchmarks ship with the source checkout (benchmarks/training.py), not with the installed package",
              file=sys.stderr)
        sys.exit(2)
    sys.path.insert(0, str(root))  # its sibling modules import as benchmarks.*
    sys.argv[0] = str(script)  # the arguments pass through unchanged
    runpy.run_path(str(script), run_name="__main__")
