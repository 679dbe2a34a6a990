"""Generate the synthetic demo data sets (no real data) that the bundles fall back to.

    python tools/make_demo_data.py --kind dermoscopy --out demo_data/dermoscopy --num-cases 24
    python tools/make_demo_data.py --kind volumes --out demo_data/volumes --num-cases 6 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samssl.demo import DEMO_KINDS, make_demo_dermoscopy, make_demo_volumes

DEFAULT_NUM_CASES = {"dermoscopy": 24, "volumes": 6}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=DEMO_KINDS, required=True, help="which demo data set to write")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; files overwritten)")
    parser.add_argument("--num-cases", type=int, default=None, help="number of cases (default: 24 images / 6 volumes)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; case i depends only on (seed, i)")
    args = parser.parse_args(argv)

    num_cases = args.num_cases if args.num_cases is not None else DEFAULT_NUM_CASES[args.kind]
    generate = make_demo_dermoscopy if args.kind == "dermoscopy" else make_demo_volumes
    out = generate(args.out, num_cases=num_cases, seed=args.seed)
    print(f"wrote {num_cases} {args.kind} demo cases to {out}")
    return out


if __name__ == "__main__":
    main()
