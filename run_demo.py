"""`make demo`: build the miniature dataset and run the toolkit on it.

    python run_demo.py --out runs/demo [--quick] [--seed 0]

Grows with the toolkit: for now it builds the miniature and validates it with the data layer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import data_utils
from make_demo_data import build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--data", default="data/miniature", help="where the miniature is built")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny miniature and budgets (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = build(Path(args.data), seed=args.seed, size="tiny" if args.quick else "demo")
    print(f"\nminiature dataset: {root}")
    return data_utils.main(["--data-dir", str(root)])


if __name__ == "__main__":
    sys.exit(main())
