"""samssl.experiments: the harness behind every bundle's results table, and each bundle's variants.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path

import pytest

from samssl.experiments import VariantsError, comparison_report, load_variants, paired_table, seeds_table
from samssl.experiments.cli import compare_main, main, parser_for
from samssl.experiments.records import differing_settings
from samssl.experiments.runner import comparison_settings, run_child
from samssl.experiments.variants import bundle_names

ROOT = Path(__file__).resolve().parents[1]
TOY = {"method": "new", "baseline": "base", "default_variants": ["base", "new"],
       "variants": {"base": {"label": "Baseline"}, "new": {"label": "Method"}}}


def _write_bundle(folder: Path, variants: dict, files: tuple[str, ...] = ()) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "variants.json").write_text(json.dumps(variants))
    (folder / "configs" / "cpu.json").write_text(json.dumps({"_comment": "the toy's preset", "num_iterations": 10}))
    for name in files:
        (folder / "configs" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "configs" / name).write_text("{}")
    return folder


@pytest.fixture
def toy(tmp_path) -> Path:
    """A bundle folder inside a project (``<project>/bundles/toy``) whose variants are Baseline and Method."""
    return _write_bundle(tmp_path / "project" / "bundles" / "toy", TOY)


def _compare(bundle: Path, out: Path, *args: str) -> str:
    compare_main([str(bundle), "--train_dir", "pool", "--out", str(out), *args])
    return (out / "results.md").read_text()


def _records(values: list[float]) -> list[dict]:
    return [{"id": f"case{i}", "dice": v, "iou": v, "sensitivity": v, "specificity": v} for i, v in enumerate(values)]


def _results(gain: float, seeds=(0, 1, 2, 3, 4, 5)) -> dict:
    base = {s: _records([0.3 + 0.01 * s, 0.5, 0.7]) for s in seeds}
    new = {s: _records([0.3 + 0.01 * s + gain, 0.5 + gain, 0.7 + gain / 2]) for s in seeds}
    return {"base": base, "new": new}


def _finish(out: Path, seed: int, values: dict[str, list[float]]) -> None:
    for name, cases in values.items():
        run = out / f"seed{seed}" / name
        run.mkdir(parents=True)
        (run / "validation_metrics.json").write_text(json.dumps({"cases": _records(cases)}))


# ------------------------------------------------------------------------------ tables


def test_seeds_table_gives_per_seed_dice_and_mean_sd_over_seeds(toy):
    results = {"base": {0: _records([0.2, 0.4]), 1: _records([0.5, 0.5])},
               "new": {0: _records([0.4, 0.4]), 1: _records([0.45, 0.45])}}
    table = seeds_table(load_variants(toy), results, ["base", "new"], [0, 1]).splitlines()
    assert table[0].startswith("| variant | Dice seed 0 | Dice seed 1 | Dice (%) mean ± sd over seeds |")
    assert table[2].startswith("| Baseline | 30.00 | 50.00 | 40.00 ± 14.14 |")
    assert table[3].startswith("| Method | 40.00 | 45.00 | 42.50 ± 3.54 |")


def test_paired_table_finds_a_consistent_gain_and_not_a_null_one(toy):
    spec, seeds = load_variants(toy), [0, 1, 2, 3, 4, 5]
    gain = paired_table(spec, _results(0.05, seeds), ["base", "new"], seeds).splitlines()[2]
    assert gain.startswith("| Method vs Baseline | Dice | +4.17 | 6/0 | 0.0312 |")
    assert gain.endswith("| better (significant) |")
    null = paired_table(spec, _results(0.0, seeds), ["base", "new"], seeds).splitlines()[2]
    assert "| +0.00 | 0/0 | 1 |" in null and null.endswith("| no difference |")


def test_cross_validated_seeds_pair_every_held_out_case_once_and_unpaired_seeds_are_refused(toy):
    def fold(seed: int, values: list[float]) -> list[dict]:  # seed s tested on its own fold's cases
        return [{**r, "id": f"fold{seed}_{r['id']}"} for r in _records(values)]

    seeds = [0, 1, 2]
    results = {"base": {s: fold(s, [0.3, 0.5]) for s in seeds}, "new": {s: fold(s, [0.4, 0.6]) for s in seeds}}
    row = paired_table(load_variants(toy), results, ["base", "new"], seeds).splitlines()[2]
    assert "| +10.00 | 3/0 | 0.25 | +10.00 | 6/0 | 0.0312 |" in row  # 6 cases: two held out per fold
    results["new"][1] = fold(2, [0.4, 0.6])  # seed 1's method tested on another fold than its baseline
    with pytest.raises(ValueError, match="seed 1 were tested on different cases"):
        paired_table(load_variants(toy), results, ["base", "new"], seeds)


def test_report_says_when_five_seeds_cannot_reach_significance(toy):
    seeds = [0, 1, 2, 3, 4]
    report = comparison_report(load_variants(toy), _results(0.05, seeds), ["base", "new"], seeds)
    assert "| 5/0 | 0.0625 |" in report
    assert "not testable at 0.05 with 5 pairs" in report
    assert "cannot go below p = 0.0625" in report


# ------------------------------------------------------------------------------ resumed and joined runs


def test_finished_runs_are_reused_and_the_report_written(toy, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    for seed in (0, 1):
        _finish(out, seed, {"base": [0.4, 0.6], "new": [0.5, 0.7]})
        for name in ("base", "new"):
            (out / f"seed{seed}" / name / "checkpoints").mkdir()
            (out / f"seed{seed}" / name / "model.pt").write_bytes(b"final weights")
    monkeypatch.setattr("samssl.experiments.runner.run_child", lambda *a, **k: pytest.fail("a finished run was trained again"))
    args = ["--test_dir", "test", "--seeds", "0", "1"]
    _compare(toy, out, *args, "--keep_checkpoints", "--variants", "base")
    assert (out / "seed0" / "base" / "checkpoints").is_dir()
    report = _compare(toy, out, *args)
    assert "| Method | 60.00 | 60.00 |" in report
    assert f"command: samssl-compare {toy} --train_dir pool" in report
    # finished runs keep their model and metrics, not the training states only needed to resume
    assert not list(out.glob("seed*/*/checkpoints")) and len(list(out.glob("seed*/*/model.pt"))) == 4
    stored = json.loads((out / "results.json").read_text())
    assert stored["method"] == "new" and stored["baseline"] == "base" and stored["cases"]["base"]["1"][0]["dice"] == 0.4
    assert report.startswith("| variant |")


def test_an_unfinished_run_is_trained_with_the_variant_overrides_in_its_bundle(tmp_path, monkeypatch):
    variants = {**TOY, "variants": {"base": {"label": "Baseline", "configs": ["baselines/suponly.json"]},
                                    "new": {"label": "Method", "overrides": {"run_name": "new", "x#on": True}}}}
    bundle = _write_bundle(tmp_path / "project" / "bundles" / "toy", variants, ("baselines/suponly.json",))
    out = tmp_path / "runs"
    _finish(out, 0, {"base": [0.4]})
    calls: list[tuple[list[str], Path]] = []

    def train(command, cwd):
        calls.append((command, cwd))
        _finish(out, 0, {"new": [0.5]})

    monkeypatch.setattr("samssl.experiments.runner.run_child", train)
    _compare(bundle, out, "--test_dir", "test", "--seeds", "0")
    (command, cwd), = calls
    assert command[1:5] == ["-m", "monai.bundle", "run", "training"] and cwd == tmp_path / "project"
    assert command[command.index("--config_file") + 1] == (f"['{bundle}/configs/train.json',"
                                                           f"'{bundle}/configs/cpu.json']")
    assert command[-4:] == ["--run_name", "new", "--x#on", "True"]  # MONAI's command line knows only True/False
    assert command[command.index("--seed") + 1] == "0" and command[command.index("--num_labelled") + 1] == "8"


def test_runs_recorded_in_an_earlier_results_file_are_not_trained_again(toy, tmp_path, monkeypatch):
    earlier = tmp_path / "earlier"
    _finish(earlier, 3, {"base": [0.4, 0.6], "new": [0.5, 0.7]})
    _compare(toy, earlier, "--test_dir", "test", "--seeds", "3")
    monkeypatch.setattr("samssl.experiments.runner.run_child", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    report = _compare(toy, tmp_path / "new", "--test_dir", "test", "--seeds", "3",
                      "--earlier_results", str(earlier / "results.json"))
    assert "| Method | 60.00 |" in report


def _finished_comparison(bundle: Path, out: Path, seed: int, extra: tuple[str, ...] = ()) -> Path:
    _finish(out, seed, {"base": [0.4 + 0.1 * seed, 0.6], "new": [0.5 + 0.1 * seed, 0.7]})
    _compare(bundle, out, "--test_dir", "test", "--seeds", str(seed), *extra)
    return out / "results.json"


def test_a_comparison_finished_in_pieces_joins_its_earlier_results_files(toy, tmp_path, monkeypatch):
    first, second = _finished_comparison(toy, tmp_path / "a", 0), _finished_comparison(toy, tmp_path / "b", 1)
    monkeypatch.setattr("samssl.experiments.runner.run_child", lambda *a, **k: pytest.fail("a recorded run was trained again"))
    everything = tmp_path / "all"
    report = _compare(toy, everything, "--test_dir", "test", "--seeds", "0", "1", "--report_only",
                      "--earlier_results", str(first), str(second))
    assert "| Baseline | 50.00 | 55.00 |" in report
    assert set(json.loads((everything / "results.json").read_text())["cases"]["new"]) == {"0", "1"}
    # a report over part of them still keeps every record it was given, for the next piece
    _compare(toy, everything, "--test_dir", "test", "--seeds", "1", "--report_only", "--variants", "new",
             "--earlier_results", str(first), str(second))
    stored = json.loads((everything / "results.json").read_text())
    assert stored["seeds"] == [1]
    assert {name: set(by_seed) for name, by_seed in stored["cases"].items()} == {"base": {"0", "1"}, "new": {"0", "1"}}


def test_earlier_results_of_another_comparison_or_that_disagree_are_refused(toy, tmp_path):
    other = _finished_comparison(toy, tmp_path / "other", 0, ("--num_labelled", "4"))
    args = ("--test_dir", "test", "--seeds", "0", "--report_only")
    with pytest.raises(SystemExit, match="other settings .*num_labelled: 4 there, 8 now"):
        _compare(toy, tmp_path / "all", *args, "--earlier_results", str(other))
    first = _finished_comparison(toy, tmp_path / "a", 0)
    changed = json.loads(first.read_text())
    changed["cases"]["base"]["0"][0]["dice"] = 0.9
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    with pytest.raises(SystemExit, match="base seed 0 differs between"):
        _compare(toy, tmp_path / "all", *args, "--earlier_results", str(first), str(tmp_path / "changed.json"))
    with pytest.raises(SystemExit, match="does not exist"):
        _compare(toy, tmp_path / "all", *args, "--earlier_results", str(tmp_path / "missing.json"))


def test_the_paired_tests_can_put_another_variant_against_the_rest(toy, tmp_path):
    record = _finished_comparison(toy, tmp_path / "a", 0)
    report = _compare(toy, tmp_path / "b", "--test_dir", "test", "--seeds", "0", "--report_only",
                      "--earlier_results", str(record), "--method", "base")
    assert "| Baseline vs Method | Dice | -10.00 |" in report and "| Method vs Baseline |" not in report
    # the records still name the bundle's method: --method changes the report, not the comparison
    assert json.loads((tmp_path / "b" / "results.json").read_text())["method"] == "new"
    with pytest.raises(SystemExit):
        _compare(toy, tmp_path / "c", "--test_dir", "test", "--seeds", "0", "--method", "nonesuch")


def test_report_only_names_the_runs_that_are_missing(toy, tmp_path):
    with pytest.raises(SystemExit, match="no finished run for base seed 0"):
        _compare(toy, tmp_path / "runs", "--test_dir", "test", "--seeds", "0", "--report_only")


def test_save_predictions_runs_the_bundle_evaluation_on_the_test_set_once(toy, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    _finish(out, 0, {"new": [0.5], "base": [0.4]})
    run = out / "seed0" / "new"
    (run / "model.pt").write_bytes(b"final weights")  # base has none, e.g. SFR's "SAM alone": scored, nothing deployed
    commands: list[list[str]] = []

    def evaluate(command, cwd):
        commands.append(command)
        (run / "test_predictions").mkdir()
        (run / "test_predictions" / "test_metrics.json").write_text("{}")

    monkeypatch.setattr("samssl.experiments.runner.run_child", evaluate)
    args = ("--test_dir", "test_images", "--seeds", "0", "--variants", "base", "new", "--save_predictions")
    _compare(toy, out, *args)
    _compare(toy, out, *args)  # the masks exist: not written again
    assert len(commands) == 1
    command = commands[0]
    assert command[command.index("run") + 1] == "evaluating"
    assert "evaluate.json" in command[command.index("--config_file") + 1]
    assert "cpu.json" in command[command.index("--config_file") + 1]
    assert Path(command[command.index("--dataset_dir") + 1]).name == "test_images"
    assert command[command.index("--checkpoint") + 1] == str(run / "model.pt")
    assert command[command.index("--prediction_dir") + 1] == str(run / "test_predictions" / "masks")
    assert command[command.index("--output_postfix") + 1] == "segmentation"  # ISIC naming


def _fake_run(commands: list[list[str]], dice: float = 0.5):
    """A ``run_child`` that records the command and writes the metrics file the run would write."""
    def run(command, cwd):
        commands.append(command)
        out = Path(command[command.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        name = "validation" if "training" in command else command[command.index("--eval_name") + 1]
        (out / f"{name}_metrics.json").write_text(json.dumps({"cases": _records([dice, dice + 0.1])}))
        (out / "model.pt").write_bytes(b"weights") if "training" in command else None
    return run


def test_folds_train_each_seed_on_its_pool_and_test_it_on_its_own_held_out_fold(toy, tmp_path, monkeypatch):
    pool = tmp_path / "ph2"
    for sub in ("images", "masks"):
        (pool / sub).mkdir(parents=True)
    for i in range(6):
        (pool / "images" / f"IMD{i:03d}.jpg").write_bytes(b"")
        (pool / "masks" / f"IMD{i:03d}_lesion.png").write_bytes(b"")
    commands: list[list[str]] = []
    monkeypatch.setattr("samssl.experiments.runner.run_child", _fake_run(commands))
    out = tmp_path / "runs"
    compare_main([str(toy), "--train_dir", str(pool), "--folds", "3", "--seeds", "0", "1", "3", "--variants", "new",
                  "--out", str(out)])
    folders = [(Path(c[c.index("--dataset_dir") + 1]), Path(c[c.index("--val_dataset_dir") + 1])) for c in commands]
    assert folders[0] == folders[2] != folders[1], "seeds 0 and 3 share fold 0 of 3; seed 1 has fold 1"
    for train, test in folders:
        trained, tested = ({p.stem for p in (d / "images").iterdir()} for d in (train, test))
        assert len(tested) == 2 and not trained & tested and len(trained | tested) == 6
    assert json.loads((out / "comparison.json").read_text())["folds"] == 3
    assert "cut into 3 folds" in (out / "results.md").read_text()


def test_models_from_tests_another_comparisons_models_on_this_test_set_without_training(toy, tmp_path, monkeypatch):
    commands: list[list[str]] = []
    monkeypatch.setattr("samssl.experiments.runner.run_child", _fake_run(commands))
    trained = tmp_path / "trained"
    _compare(toy, trained, "--test_dir", "isic", "--seeds", "0", "1")
    commands.clear()
    monkeypatch.setattr("samssl.experiments.runner.run_child", _fake_run(commands, dice=0.2))
    report = _compare(toy, tmp_path / "other", "--test_dir", "other_folder", "--seeds", "0", "1",
                      "--models_from", str(trained))
    assert len(commands) == 4 and all(c[c.index("run") + 1] == "evaluating" for c in commands)
    command = commands[0]
    assert command[command.index("--checkpoint") + 1] == str(trained / "seed0" / "base" / "model.pt")
    assert Path(command[command.index("--dataset_dir") + 1]).name == "other_folder"
    assert command[command.index("--eval_name") + 1] == "validation"
    assert "| Method | 25.00 |" in report and "not trained here" in report
    # models trained otherwise are refused, and so is a comparison that never trained this variant and seed
    with pytest.raises(SystemExit, match="other settings.*num_labelled"):
        _compare(toy, tmp_path / "third", "--test_dir", "other_folder", "--seeds", "0", "--num_labelled", "4",
                 "--models_from", str(trained))
    with pytest.raises(SystemExit, match="no .*seed2.*model.pt"):
        _compare(toy, tmp_path / "fourth", "--test_dir", "other_folder", "--seeds", "2", "--models_from", str(trained))
    # its scores reprint from the record alone once the models are gone (a fresh checkout has no runs)
    shutil.rmtree(trained)
    reprint = _compare(toy, tmp_path / "reprint", "--test_dir", "other_folder", "--seeds", "0", "1", "--models_from",
                       str(trained), "--report_only", "--earlier_results", str(tmp_path / "other" / "results.json"))
    assert "| Method | 25.00 |" in reprint and len(commands) == 4


def test_a_bundles_evaluation_is_merged_onto_its_shared_base(tmp_path):
    """The harness runs a bundle's evaluate.json as its docs do: listed after its family's base_evaluate.json."""
    from samssl.experiments.runner import predictions_command

    spec = load_variants("uamt_skin", ROOT / "bundles")
    command = predictions_command(spec, tmp_path / "run", "test_images", "cpu")
    configs = command[command.index("--config_file") + 1]
    bundle = spec.bundle_dir / "configs"
    assert configs == f"['{bundle / 'base_evaluate.json'}','{bundle / 'evaluate.json'}','{bundle / 'cpu.json'}']"


def test_a_folder_of_another_comparison_is_refused_not_reused(toy, tmp_path, monkeypatch):
    """A 1-labelled comparison must not report the 8-labelled runs it finds under the same seed names."""
    out = tmp_path / "runs"
    _finish(out, 0, {"new": [0.5, 0.7]})
    monkeypatch.setattr("samssl.experiments.runner.run_child", lambda *a, **k: pytest.fail("nothing should be trained"))
    args = ("--test_dir", "test", "--seeds", "0", "--variants", "new")
    _compare(toy, out, *args, "--num_labelled", "8")
    recorded = json.loads((out / "comparison.json").read_text())
    assert recorded["num_labelled"] == 8 and not Path(recorded["train_dir"]).is_absolute()  # no machine paths
    with pytest.raises(SystemExit, match="num_labelled: 8 there, 1 now.*own --out folder"):
        _compare(toy, out, *args, "--num_labelled", "1")
    with pytest.raises(SystemExit, match="preset"):
        _compare(toy, out, *args, "--num_labelled", "8", "--preset", "", "--report_only")
    assert "| Method | 60.00 |" in _compare(toy, out, *args, "--num_labelled", "8", "--report_only")


def test_a_preset_edited_since_its_records_were_made_does_not_join_them(toy, tmp_path, monkeypatch):
    """A preset keeps its name when its schedule or precision changes: its values are recorded and
    compared, so the records of the old preset cannot enter the new preset's tables."""
    first = _finished_comparison(toy, tmp_path / "a", 0)
    recorded = json.loads(first.read_text())["settings"]
    assert recorded["preset"] == "cpu" and recorded["preset_values"] == {"num_iterations": 10}  # comments left out
    (toy / "configs" / "cpu.json").write_text(json.dumps({"num_iterations": 20, "amp": "auto"}))
    monkeypatch.setattr("samssl.experiments.runner.run_child", lambda *a, **k: pytest.fail("nothing should be trained"))
    with pytest.raises(SystemExit, match=r"preset amp: None there, 'auto' now; preset num_iterations: 10 there, 20 now"):
        _compare(toy, tmp_path / "b", "--test_dir", "test", "--seeds", "0", "--report_only", "--earlier_results", str(first))
    with pytest.raises(SystemExit, match="other settings .*preset num_iterations: 10 there, 20 now.*own --out folder"):
        _compare(toy, tmp_path / "a", "--test_dir", "test", "--seeds", "0", "--report_only")
    with pytest.raises(SystemExit, match=r"--preset cpu_fast: .*cpu_fast.json does not exist \(presets there: cpu\)"):
        _compare(toy, tmp_path / "c", "--test_dir", "test", "--preset", "cpu_fast", "--report_only")
    before = {k: v for k, v in recorded.items() if k != "preset_values"}  # a record made before values were kept
    assert "not recorded there" in differing_settings(before, recorded, toy.parents[1])


# ------------------------------------------------------------------------------ variants.json


@pytest.mark.parametrize("change, message", [
    ({"metod": "new"}, r"variants.json: unknown key\(s\) \['metod'\]"),
    ({"method": "newer"}, r"variants.json: variant\(s\) \['newer'\] named but not declared"),
    ({"default_variants": ["base", "old"]}, r"\['old'\] named but not declared .*declared: \['base', 'new'\]"),
    ({"variants": {"base": {"label": "B", "overide": {}}, "new": {"label": "M"}}},
     r"variant 'base': unknown key\(s\) \['overide'\]"),
    ({"variants": {"base": {"label": "B", "configs": ["baselines/none.json"]}, "new": {"label": "M"}}},
     r"variant 'base': config file\(s\) \['baselines/none.json'\] do not exist"),
    ({"variants": {"base": {"label": "B", "overrides": ["--run_name", "b"]}, "new": {"label": "M"}}},
     r"'overrides' must be an object of key: value"),
    ({"data": "nifti"}, r"'data' must be one of \['dermoscopy', 'msd'\]"),
])
def test_a_broken_variants_file_gives_one_clear_error(tmp_path, change, message):
    bundle = _write_bundle(tmp_path / "toy", {**TOY, **change})
    with pytest.raises(VariantsError, match=message) as error:
        load_variants(bundle)
    assert "\n" not in str(error.value) and str(bundle / "configs" / "variants.json") in str(error.value)
    with pytest.raises(SystemExit, match=f"samssl-compare: .*{message}"):
        compare_main([str(bundle), "--train_dir", "a", "--test_dir", "b"])


def test_a_missing_key_or_bundle_or_unknown_variant_on_the_command_line_is_refused(tmp_path, toy, monkeypatch, capsys):
    bundle = _write_bundle(tmp_path / "toy", {k: v for k, v in TOY.items() if k != "baseline"})
    with pytest.raises(VariantsError, match=r"missing key\(s\) \['baseline'\]"):
        load_variants(bundle)
    monkeypatch.chdir(toy.parents[1])  # the project: bundles/ holds toy
    with pytest.raises(SystemExit, match=r"no bundle 'nope': .*\(bundles there: toy\)"):
        compare_main(["nope"])
    with pytest.raises(SystemExit):
        compare_main(["toy", "--train_dir", "a", "--test_dir", "b", "--variants", "mean_teacher"])
    assert "invalid choice: 'mean_teacher'" in capsys.readouterr().err


def test_a_bundle_is_found_by_name_under_bundles_or_by_path(toy, monkeypatch):
    monkeypatch.chdir(toy.parents[1])
    by_name, by_path = load_variants("toy"), load_variants(toy)
    assert by_name.bundle_dir == by_path.bundle_dir == toy and by_name.project_root == toy.parents[1]
    assert parser_for(by_name).parse_args(["--train_dir", "a"]).out == str(toy / "runs" / "experiments")


def test_every_bundle_declares_its_comparison():
    bundles = {p.name for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file()}
    assert set(bundle_names(ROOT / "bundles")) == bundles
    for name in bundles:
        spec = load_variants(ROOT / "bundles" / name)  # checks every override file exists
        assert spec.baseline == "suponly" and spec.method in spec.default_variants and spec.dataset


# The committed comparisons and the command each was made with (bundles/*/docs/README.md): the
# settings the harness derives from that command now must still be the recorded ones, or
# --earlier_results would refuse the records.
COMMITTED = {
    "samkd_dualtask_skin/docs/results/cpu_8_labelled.json": ["--train_dir", "../shared/data/dermoscopy/ph2",
                                                             "--test_dir", "../shared/data/dermoscopy/isic2017"],
    "semisam_la/docs/results/cpu_4_labelled.json": ["--data", "../shared/data/la", "--num_labelled", "4"],
    "semisam_la/docs/results/cpu_fp32/cpu_4_labelled.json": ["--data", "../shared/data/la", "--num_labelled", "4",
                                                             "--preset", "cpu_fp32"],
    "semisam_la/docs/results/bf16_parity/cpu_4_labelled_bf16_parity.json": [
        "--data", "../shared/data/la", "--num_labelled", "4", "--preset", "cpu_fp32"],
    "sfr_la/docs/results/seeds012_4_labelled_comparison.json": ["--data", "../shared/data/la", "--num_labelled", "4"],
    "sfr_la/docs/results/cpu_1_labelled.json": ["--data", "../shared/data/la", "--num_labelled", "1"],
    "uamt_skin/docs/results/across_folders/ph2_5_folds_8_labelled.json": [
        "--train_dir", "../shared/data/dermoscopy/ph2", "--folds", "5"],
    "uamt_skin/docs/results/across_folders/isic2017_same_models.json": [
        "--train_dir", "../shared/data/dermoscopy/ph2", "--folds", "5", "--test_dir", "../shared/data/dermoscopy/isic2017",
        "--models_from", "runs/uamt_ph2_folds"],
}


@pytest.mark.parametrize("record", sorted(COMMITTED))
def test_committed_records_are_still_this_harness_comparison(record, monkeypatch):
    document = json.loads((ROOT / "bundles" / record).read_text())
    spec = load_variants(ROOT / "bundles" / document["bundle"])
    monkeypatch.chdir(ROOT)  # the documented commands run from the repository root
    settings = comparison_settings(spec, parser_for(spec).parse_args(COMMITTED[record]))
    assert differing_settings(document["settings"], settings, spec.project_root) == ""
    assert {n: spec.variants[n].label for n in document["variants"]} == document["variants"]
    assert document["method"] == spec.method


def test_committed_dermoscopy_record_reports_through_earlier_results(tmp_path, monkeypatch):
    """The samkd table of its README, rebuilt from the committed record alone (nothing trained)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("samssl.experiments.runner.run_child", lambda *a, **k: pytest.fail("nothing should be trained"))
    record = "bundles/samkd_dualtask_skin/docs/results/cpu_8_labelled.json"
    compare_main(["samkd_dualtask_skin", *COMMITTED[record.removeprefix("bundles/")], "--num_labelled", "8",
                  "--report_only", "--earlier_results", record, "--out", str(tmp_path)])
    report = (tmp_path / "results.md").read_text()
    method, baseline = "Full method (+ fused prompt, SAM, KD)", "SupOnly (main network, labelled only)"
    assert f"| {method} vs {baseline} | Dice | +9.38 | 5/0 |" in report


def test_committed_la_record_reports_through_earlier_results_on_the_real_data(tmp_path, la_root):
    """SemiSAM's 4-labelled float32-preset record joined by the harness on the real LA folder, at the path it was recorded
    with (``../shared/data/la`` from the project root: here a project assembled around the bundle's configs)."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "bundles" / "semisam_la" / "configs", project / "bundles" / "semisam_la" / "configs")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "la").symlink_to(la_root.resolve(), target_is_directory=True)
    record = ROOT / "bundles" / "semisam_la" / "docs" / "results" / "cpu_fp32" / "cpu_4_labelled.json"
    compare_main([str(project / "bundles" / "semisam_la"), "--data", str(tmp_path / "shared" / "data" / "la"),
                  "--preset", "cpu_fp32", "--report_only", "--earlier_results", str(record),
                  "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| MT + SemiSAM vs SupOnly | Dice | +0.52 |" in report


# ------------------------------------------------------------------------------ entry points


def test_console_entry_points_and_the_module_verbs_exist(toy, capsys):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"samssl-compare", "samssl-leaderboard"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(import_module(module), function))
    with pytest.raises(SystemExit, match="usage: python -m samssl.experiments"):
        main(["train"])
    with pytest.raises(SystemExit) as exit_code:
        main(["compare", str(toy), "--help"])
    assert exit_code.value.code == 0 and "samssl-compare toy" in capsys.readouterr().out


def test_python_dash_m_runs_the_harness(toy):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "samssl.experiments", "compare", str(toy), "--help"],
                          capture_output=True, text=True, cwd=toy.parents[2])
    assert done.returncode == 0 and "--earlier_results" in done.stdout, done.stderr


def test_traces_table_averages_each_term_over_phases_of_training(tmp_path, capsys):
    from samssl.experiments.traces import phase_means

    for name, offset in (("suponly", 0.0), ("uamt", 0.2)):
        run = tmp_path / name
        run.mkdir()
        lines = [{"iteration": i, "label_foreground": 0.3, "prediction_foreground": 0.3 + offset * i / 10}
                 for i in range(1, 11)]
        lines[0]["pseudo_foreground"] = 0.9  # a term present in part of the run only
        (run / "training_trace.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = [json.loads(line) for line in (tmp_path / "uamt" / "training_trace.jsonl").read_text().splitlines()]
    assert phase_means(records, "prediction_foreground", 2) == pytest.approx([0.36, 0.46])
    assert phase_means(records, "pseudo_foreground", 2) == [0.9, None]
    main(["traces", f"suponly={tmp_path / 'suponly'}", f"uamt={tmp_path / 'uamt'}", "--keys",
          "prediction_foreground", "missing_term", "--phases", "2"])
    table = capsys.readouterr().out
    assert "| suponly | prediction_foreground | 0.3 | 0.3 |" in table
    assert "| uamt | prediction_foreground | 0.36 | 0.46 |" in table and "missing_term" not in table
    with pytest.raises(SystemExit, match="no training_trace.jsonl"):
        main(["traces", str(tmp_path / "nowhere"), "--keys", "loss"])


def test_a_stopped_harness_stops_the_run_it_was_training(tmp_path):
    """``kill`` of samssl-compare must not leave a training writing into the comparison's folder."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(300)"
    harness = subprocess.Popen(
        [sys.executable, "-c", ("import sys; from pathlib import Path; from samssl.experiments.runner import run_child; "
                                f"run_child([sys.executable, '-c', {child!r}], Path('.'))")],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.time() < deadline and harness.poll() is None, "the child never started"
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    harness.send_signal(signal.SIGTERM)
    _, stderr = harness.communicate(timeout=60)
    assert harness.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith("samssl-compare: stopped by signal SIGTERM")
    with pytest.raises(ProcessLookupError):  # reaped by the harness, so gone (not a zombie)
        os.kill(child_pid, 0)


def test_a_failed_run_fails_the_harness_with_its_exit_code(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_child([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    assert failure.value.returncode == 3
