"""tools/experiment_runner.py: the harness behind every bundle's results table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from experiment_runner import (  # noqa: E402
    BundleExperiment,
    Variant,
    comparison_report,
    main,
    paired_table,
    seeds_table,
)

SPEC = BundleExperiment(
    bundle="uamt_skin",
    variants={"base": Variant("Baseline"), "new": Variant("Method")},
    method="new",
    default_variants=("base", "new"),
)


def _records(values: list[float]) -> list[dict]:
    return [{"id": f"case{i}", "dice": v, "iou": v, "sensitivity": v, "specificity": v} for i, v in enumerate(values)]


def _results(gain: float, seeds=(0, 1, 2, 3, 4, 5)) -> dict:
    base = {s: _records([0.3 + 0.01 * s, 0.5, 0.7]) for s in seeds}
    new = {s: _records([0.3 + 0.01 * s + gain, 0.5 + gain, 0.7 + gain / 2]) for s in seeds}
    return {"base": base, "new": new}


def test_seeds_table_gives_per_seed_dice_and_mean_sd_over_seeds():
    results = {"base": {0: _records([0.2, 0.4]), 1: _records([0.5, 0.5])},
               "new": {0: _records([0.4, 0.4]), 1: _records([0.45, 0.45])}}
    table = seeds_table(SPEC, results, ["base", "new"], [0, 1]).splitlines()
    assert table[0].startswith("| variant | Dice seed 0 | Dice seed 1 | Dice (%) mean ± sd over seeds |")
    assert table[2].startswith("| Baseline | 30.00 | 50.00 | 40.00 ± 14.14 |")
    assert table[3].startswith("| Method | 40.00 | 45.00 | 42.50 ± 3.54 |")


def test_paired_table_finds_a_consistent_gain_and_not_a_null_one():
    seeds = [0, 1, 2, 3, 4, 5]
    gain = paired_table(SPEC, _results(0.05, seeds), ["base", "new"], seeds).splitlines()[2]
    assert gain.startswith("| Method vs Baseline | Dice | +4.17 | 6/0 | 0.0312 |")
    assert gain.endswith("| better (significant) |")
    null = paired_table(SPEC, _results(0.0, seeds), ["base", "new"], seeds).splitlines()[2]
    assert "| +0.00 | 0/0 | 1 |" in null and null.endswith("| no difference |")


def test_report_says_when_five_seeds_cannot_reach_significance():
    seeds = [0, 1, 2, 3, 4]
    report = comparison_report(SPEC, _results(0.05, seeds), ["base", "new"], seeds)
    assert "| 5/0 | 0.0625 |" in report
    assert "not testable at 0.05 with 5 pairs" in report
    assert "cannot go below p = 0.0625" in report


def test_main_reuses_finished_runs_and_writes_the_report(tmp_path, monkeypatch):
    for seed in (0, 1):
        for name, values in (("base", [0.4, 0.6]), ("new", [0.5, 0.7])):
            run = tmp_path / f"seed{seed}" / name
            run.mkdir(parents=True)
            (run / "validation_metrics.json").write_text(json.dumps({"cases": _records(values)}))
            (run / "checkpoints").mkdir()
            (run / "model.pt").write_bytes(b"final weights")
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    args = ["--train_dir", "pool", "--test_dir", "test", "--seeds", "0", "1", "--out", str(tmp_path)]
    main(SPEC, args + ["--keep_checkpoints", "--variants", "base"])
    assert (tmp_path / "seed0" / "base" / "checkpoints").is_dir()
    report = main(SPEC, args)
    assert "| Method | 60.00 | 60.00 |" in report
    # finished runs keep their model and metrics, not the training states only needed to resume
    assert not list(tmp_path.glob("seed*/*/checkpoints")) and len(list(tmp_path.glob("seed*/*/model.pt"))) == 4
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["method"] == "new" and stored["cases"]["base"]["1"][0]["dice"] == 0.4
    assert (tmp_path / "results.md").read_text().startswith("| variant |")


def test_a_spec_naming_an_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="not declared"):
        BundleExperiment(bundle="x", variants={"a": Variant("A")}, method="b", default_variants=("a",))


def test_every_bundle_declares_its_comparison():
    import experiments

    bundles = {p.name for p in (Path(__file__).resolve().parents[1] / "bundles").iterdir() if (p / "configs").is_dir()}
    assert set(experiments.EXPERIMENTS) == bundles
    for module in experiments.EXPERIMENTS.values():
        spec = module.SPEC
        for variant in spec.variants.values():
            for config in variant.configs:
                assert (spec.bundle_dir / config).is_file(), f"{spec.bundle}: {config} is missing"


def test_runs_recorded_in_an_earlier_results_file_are_not_trained_again(tmp_path, monkeypatch):
    earlier = tmp_path / "earlier"
    for name, values in (("base", [0.4, 0.6]), ("new", [0.5, 0.7])):
        run = earlier / "seed3" / name
        run.mkdir(parents=True)
        (run / "validation_metrics.json").write_text(json.dumps({"cases": _records(values)}))
    main(SPEC, ["--train_dir", "pool", "--test_dir", "test", "--seeds", "3", "--out", str(earlier)])

    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    report = main(SPEC, ["--train_dir", "pool", "--test_dir", "test", "--seeds", "3", "--out", str(tmp_path / "new"),
                         "--earlier_results", str(earlier / "results.json")])
    assert "| Method | 60.00 |" in report


def _finished_comparison(out: Path, seed: int, extra: list[str] | None = None) -> Path:
    for name, values in (("base", [0.4 + 0.1 * seed, 0.6]), ("new", [0.5 + 0.1 * seed, 0.7])):
        run = out / f"seed{seed}" / name
        run.mkdir(parents=True)
        (run / "validation_metrics.json").write_text(json.dumps({"cases": _records(values)}))
    main(SPEC, ["--train_dir", "pool", "--test_dir", "test", "--seeds", str(seed), "--out", str(out), *(extra or [])])
    return out / "results.json"


def test_a_comparison_finished_in_pieces_joins_its_earlier_results_files(tmp_path, monkeypatch):
    first, second = _finished_comparison(tmp_path / "a", 0), _finished_comparison(tmp_path / "b", 1)
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    args = ["--train_dir", "pool", "--test_dir", "test", "--seeds", "0", "1", "--out", str(tmp_path / "all")]
    report = main(SPEC, args + ["--report_only", "--earlier_results", str(first), str(second)])
    assert "| Baseline | 50.00 | 55.00 |" in report
    assert set(json.loads((tmp_path / "all" / "results.json").read_text())["cases"]["new"]) == {"0", "1"}
    # a report over part of them still keeps every record it was given, for the next piece
    seed1 = ["--train_dir", "pool", "--test_dir", "test", "--seeds", "1", "--out", str(tmp_path / "all")]
    main(SPEC, seed1 + ["--report_only", "--variants", "new", "--earlier_results", str(first), str(second)])
    stored = json.loads((tmp_path / "all" / "results.json").read_text())
    assert stored["seeds"] == [1]
    assert {name: set(by_seed) for name, by_seed in stored["cases"].items()} == {"base": {"0", "1"}, "new": {"0", "1"}}


def test_earlier_results_of_another_comparison_or_that_disagree_are_refused(tmp_path):
    other = _finished_comparison(tmp_path / "other", 0, ["--num_labelled", "4"])
    args = ["--train_dir", "pool", "--test_dir", "test", "--seeds", "0", "--out", str(tmp_path / "all"),
            "--report_only"]
    with pytest.raises(SystemExit, match="other settings .*num_labelled: 4 there, 8 now"):
        main(SPEC, args + ["--earlier_results", str(other)])
    first = _finished_comparison(tmp_path / "a", 0)
    changed = json.loads(first.read_text())
    changed["cases"]["base"]["0"][0]["dice"] = 0.9
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match="base seed 0 differs between"):
        main(SPEC, args + ["--earlier_results", str(first), str(tmp_path / "changed.json")])
    with pytest.raises(SystemExit, match="does not exist"):
        main(SPEC, args + ["--earlier_results", str(tmp_path / "missing.json")])


def test_report_only_names_the_runs_that_are_missing(tmp_path):
    with pytest.raises(SystemExit, match="no finished run for Baseline|no finished run for base seed 0"):
        main(SPEC, ["--train_dir", "pool", "--test_dir", "test", "--seeds", "0", "--out", str(tmp_path),
                    "--report_only"])


def test_save_predictions_runs_the_bundle_evaluation_on_the_test_set_once(tmp_path, monkeypatch):
    run = tmp_path / "seed0" / "new"
    run.mkdir(parents=True)
    (run / "validation_metrics.json").write_text(json.dumps({"cases": _records([0.5])}))
    (run / "model.pt").write_bytes(b"final weights")
    no_model = tmp_path / "seed0" / "base"  # e.g. SFR's "SAM alone": scored, but no network to deploy
    no_model.mkdir(parents=True)
    (no_model / "validation_metrics.json").write_text(json.dumps({"cases": _records([0.4])}))
    commands: list[list[str]] = []

    def evaluate(command, **kwargs):
        commands.append(command)
        (run / "test_predictions").mkdir()
        (run / "test_predictions" / "test_metrics.json").write_text("{}")

    monkeypatch.setattr("subprocess.run", evaluate)
    args = ["--train_dir", "pool", "--test_dir", "test_images", "--seeds", "0", "--variants", "base", "new",
            "--out", str(tmp_path), "--save_predictions"]
    main(SPEC, args)
    main(SPEC, args)  # the masks exist: not written again
    assert len(commands) == 1
    command = commands[0]
    assert command[command.index("run") + 1] == "evaluating" and "evaluate.json" in command[command.index("--config_file") + 1]
    assert "cpu.json" in command[command.index("--config_file") + 1]
    assert Path(command[command.index("--dataset_dir") + 1]).name == "test_images"
    assert command[command.index("--checkpoint") + 1] == str(run / "model.pt")
    assert command[command.index("--prediction_dir") + 1] == str(run / "test_predictions" / "masks")
    assert command[command.index("--output_postfix") + 1] == "segmentation"  # ISIC naming


def test_a_folder_of_another_comparison_is_refused_not_reused(tmp_path, monkeypatch):
    """A 1-labelled comparison must not report the 4-labelled runs it finds under the same seed names."""
    run = tmp_path / "seed0" / "new"
    run.mkdir(parents=True)
    (run / "validation_metrics.json").write_text(json.dumps({"cases": _records([0.5, 0.7])}))
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("nothing should be trained"))
    base_args = ["--train_dir", "pool", "--test_dir", "test", "--seeds", "0", "--out", str(tmp_path), "--variants", "new"]
    main(SPEC, base_args + ["--num_labelled", "8"])
    recorded = json.loads((tmp_path / "comparison.json").read_text())
    assert recorded["num_labelled"] == 8 and not Path(recorded["train_dir"]).is_absolute()  # no machine paths
    with pytest.raises(SystemExit, match="num_labelled: 8 there, 1 now.*own --out folder"):
        main(SPEC, base_args + ["--num_labelled", "1"])
    with pytest.raises(SystemExit, match="preset"):
        main(SPEC, base_args + ["--num_labelled", "8", "--preset", "", "--report_only"])
    assert "| Method | 60.00 |" in main(SPEC, base_args + ["--num_labelled", "8", "--report_only"])
