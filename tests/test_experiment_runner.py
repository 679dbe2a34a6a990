"""tools/experiment_runner.py: the table over seeds that the bundle docs quote."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from experiment_runner import DERMOSCOPY_METRICS, Variant, seeds_table  # noqa: E402


def test_seeds_table_gives_per_seed_dice_mean_sd_and_the_gap_to_the_first_row(tmp_path):
    dice = {("base", 0): 0.30, ("base", 1): 0.50, ("new", 0): 0.40, ("new", 1): 0.45}
    for (name, seed), value in dice.items():
        run = tmp_path / f"seed{seed}" / name
        run.mkdir(parents=True)
        summary = {m: {"mean": value} for m in DERMOSCOPY_METRICS}
        (run / "validation_metrics.json").write_text(json.dumps({"summary": summary, "cases": []}))
    variants = {"base": Variant("Baseline"), "new": Variant("Method")}
    table = seeds_table(tmp_path, variants, ["base", "new"], [0, 1], DERMOSCOPY_METRICS).splitlines()
    assert table[0].startswith("| method | Dice seed 0 | Dice seed 1 | dice (mean ± sd over seeds)")
    assert table[2].startswith("| Baseline | 30.00 | 50.00 | 40.00 ± 14.14 |") and table[2].endswith("|  |")
    assert table[3].startswith("| Method | 40.00 | 45.00 | 42.50 ± 3.54 |")
    assert table[3].endswith("| +2.50 (1/2 seeds better) |")
