r"""Compare any bundle's variants over seeds with paired tests: ``python tools/experiments.py BUNDLE ...``.

Each bundle declares its variants once, in ``tools/<bundle>_experiments.py`` (which also runs on its
own); a new bundle joins by being listed in ``EXPERIMENTS``. Everything after the bundle name is
that bundle's command line (``python tools/experiments.py uamt_skin --help``).

Examples:

    OMP_NUM_THREADS=1 python tools/experiments.py uamt_skin --train_dir ../shared/data/dermoscopy/ph2 \
        --test_dir ../shared/data/dermoscopy/isic2017 --num_labelled 8 --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 python tools/experiments.py semisam_la --data ../shared/data/la --num_labelled 4
"""

from __future__ import annotations

import sys

import samkd_experiments
import semisam_experiments
import sfr_experiments
import ssl_medsam2_experiments
import uamt_experiments
from experiment_runner import main

EXPERIMENTS = {module.SPEC.bundle: module for module in (uamt_experiments, samkd_experiments, semisam_experiments, sfr_experiments,
                                                     ssl_medsam2_experiments)}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in EXPERIMENTS:
        raise SystemExit(f"usage: python tools/experiments.py {{{','.join(EXPERIMENTS)}}} [options]\n\n{__doc__}")
    module = EXPERIMENTS[sys.argv[1]]
    main(module.SPEC, sys.argv[2:], description=module.__doc__)
