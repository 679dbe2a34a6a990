"""A user's mistakes get one clear last line: unknown keys, missing folders, evaluation without data.

Each test is a row of the "when something goes wrong" table in the root README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from samssl.demo import DEMO_SPLITS, ensure_demo_data, resolve_dataset_dir
from samssl.utils.config_checks import SettingsDict, check_command_line, refuse_unknown_keys
from samssl.utils.errors import (
    DEBUG_ENV,
    BundleInputError,
    InvalidInputError,
    MissingInputError,
    UnknownKeyError,
    find_input_error,
    install_concise_errors,
)

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs" / "train.json").is_file())


def _configs(bundle: Path) -> Path:
    return bundle / "configs"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_every_shipped_preset_sets_only_keys_its_bundle_defines(bundle: Path) -> None:
    """The presets and baselines a bundle ships pass the check, merged into training, evaluation and inference."""
    configs = _configs(bundle)
    presets = [p for p in sorted(configs.rglob("*.json")) if p.name not in ("metadata.json", "variants.json")
               and p.name not in ("train.json", "evaluate.json", "inference.json") and not p.name.startswith("base_")]
    assert presets, f"{bundle.name} ships no preset"
    for preset in presets:
        refuse_unknown_keys([configs / "train.json", preset])
        if preset.name in ("cpu.json", "demo.json"):
            for kind in ("evaluate", "inference"):
                refuse_unknown_keys([configs / f"base_{kind}.json", configs / f"{kind}.json", preset])


def test_a_misspelt_override_is_refused_with_the_closest_key() -> None:
    configs = _configs(ROOT / "bundles" / "samkd_dualtask_skin")
    with pytest.raises(UnknownKeyError, match=r"'num_labeled'.*did you mean 'num_labelled'\?"):
        refuse_unknown_keys([configs / "train.json"], {"num_labeled": 8})
    with pytest.raises(UnknownKeyError, match=r"'method#use_sm'.*did you mean 'method#use_sam'\?"):
        refuse_unknown_keys([configs / "train.json"], {"method#use_sm": False})
    # a switch this bundle does not have (UAMT uses no SAM) is as unknown as a misspelt one
    with pytest.raises(UnknownKeyError, match=r"method#use_sam"):
        refuse_unknown_keys([_configs(ROOT / "bundles" / "uamt_skin") / "train.json"], {"method#use_sam": False})
    refuse_unknown_keys([configs / "train.json"], {"num_labelled": 8, "method#use_sam": False, "+imports": []})


def test_a_preset_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    configs = _configs(ROOT / "bundles" / "uamt_skin")
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps({"_comment": "ok", "image_size": 128, "method": {"lamda_max": 0.5}}))
    with pytest.raises(UnknownKeyError, match=r"preset mine.json sets 'method#lamda_max'.*'method#lambda_max'"):
        refuse_unknown_keys([configs / "train.json", preset])
    # replacing a component whole: its arguments belong to the new class
    preset.write_text(json.dumps({"network_def": {"_target_": "torch.nn.Identity", "anything": 1}}))
    refuse_unknown_keys([configs / "train.json", preset])


def test_settings_sections_suggest_the_closest_name() -> None:
    class Schedule(SettingsDict):
        DEFAULTS = {"num_iterations": 10, "learning_rate": 0.1}
        WHAT = "schedule settings"

    with pytest.raises(UnknownKeyError, match=r"did you mean 'num_iterations'"):
        Schedule({"num_iteration": 3})
    assert Schedule({"learning_rate": 0.5}) == {"num_iterations": 10, "learning_rate": 0.5}


def test_check_command_line_outside_monai_run_only_installs_the_hook(monkeypatch) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    check_command_line()  # no monai.bundle call on the stack: nothing to check
    assert getattr(sys.excepthook, "samssl_concise", False)


def test_the_input_error_is_the_last_line_and_debug_keeps_the_traceback(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    install_concise_errors()
    install_concise_errors()  # idempotent: one hook
    try:
        try:
            raise MissingInputError("dataset_dir /x does not exist")
        except FileNotFoundError as err:  # what MONAI does around every config expression
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from err
    except RuntimeError as wrapped:
        error = wrapped
    assert isinstance(find_input_error(error), MissingInputError)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    sys.excepthook(type(error), error, error.__traceback__)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "error: dataset_dir /x does not exist" and len(lines) == 2
    monkeypatch.setenv(DEBUG_ENV, "1")
    sys.excepthook(type(error), error, error.__traceback__)
    assert "Traceback" in capsys.readouterr().err
    bug = ValueError("a bug, not a mistake")
    monkeypatch.delenv(DEBUG_ENV)
    sys.excepthook(ValueError, bug, None)
    assert capsys.readouterr().err.strip().endswith("ValueError: a bug, not a mistake")


def test_input_errors_are_still_the_builtin_types_callers_catch() -> None:
    assert issubclass(MissingInputError, FileNotFoundError) and issubclass(InvalidInputError, ValueError)
    assert issubclass(UnknownKeyError, ValueError) and issubclass(UnknownKeyError, BundleInputError)


def test_evaluation_without_a_folder_scores_held_out_demo_cases_only(tmp_path: Path, caplog) -> None:
    train = ensure_demo_data("dermoscopy", tmp_path)
    with caplog.at_level("WARNING"):
        heldout = resolve_dataset_dir(None, "dermoscopy", tmp_path, split="heldout")
    assert heldout != train and "heldout" in caplog.text and "--dataset_dir" in caplog.text
    names = {p.name for p in (train / "Demo_Input").iterdir()}
    held = sorted((heldout / "Demo_Input").iterdir())
    assert len(held) == DEMO_SPLITS["heldout"][1]["dermoscopy"]
    # other cases, not renamed copies: no held-out image equals a training image
    train_bytes = {(train / "Demo_Input" / n).read_bytes() for n in names}
    assert all(p.read_bytes() not in train_bytes for p in held)


def _bundle_cli(bundle: str, command: str, configs: list[str], *args: str) -> subprocess.CompletedProcess:
    folder = ROOT / "bundles" / bundle
    config = "[" + ",".join(f"'{folder / 'configs' / c}'" for c in configs) + "]"
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", command, "--config_file", config, *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_cli_misspelt_key_ends_with_one_clear_line(tmp_path: Path) -> None:
    """`--num_labeled 8` stops before anything is built or written, with the fix as the last line."""
    result = _bundle_cli("uamt_skin", "training", ["train.json", "demo.json"], "--num_labeled", "8",
                         "--bundle_root", str(tmp_path), "--demo_dir", str(tmp_path / "demo"))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-3000:]
    assert last.startswith("error: --num_labeled") and "did you mean 'num_labelled'?" in last
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_cli_missing_folder_ends_with_one_clear_line(tmp_path: Path) -> None:
    result = _bundle_cli("semisam_la", "evaluating", ["base_evaluate.json", "evaluate.json"],
                         "--dataset_dir", str(tmp_path / "not_here"), "--output_dir", str(tmp_path / "eval"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: dataset_dir {tmp_path / 'not_here'} does not exist " \
        "(leave dataset_dir empty to use the generated demo data)"
    assert "Traceback" not in result.stderr


def test_inference_before_training_says_no_weights_ship_and_how_to_train(tmp_path: Path) -> None:
    import torch

    from samssl.handlers import load_network_weights

    bundle = tmp_path / "my_bundle"
    with pytest.raises(MissingInputError, match=r"no weights ship with this bundle, train it first .*run training "
                       r"--config_file .*my_bundle.configs.train\.json.* or pass --checkpoint FILE"):
        load_network_weights(torch.nn.Linear(2, 2), bundle / "models" / "model.pt")


def test_a_model_records_its_settings_and_refuses_a_contradiction(tmp_path: Path, caplog) -> None:
    import torch

    from samssl.handlers import TrainedSettings, load_network_weights, read_trained_settings, trained_setting

    network = torch.nn.Linear(2, 2)
    record = TrainedSettings({"image_size": 128, "patch_size": (64, 64, 48)}, configs=["a/train.json", "a/demo.json"])
    path = tmp_path / "model.pt"
    torch.save({"model": network.state_dict(), "trained_settings": record.state_dict()}, path)
    assert read_trained_settings(path)["configs"] == ["train.json", "demo.json"]
    assert trained_setting(path, "image_size", 256) == 128 and trained_setting(path, "spacing", 1.0) == 1.0
    assert trained_setting(tmp_path / "absent.pt", "image_size", 256) == 256  # the loader reports the missing file
    load_network_weights(network, path, expected_settings={"image_size": 128, "patch_size": [64, 64, 48]})
    with pytest.raises(InvalidInputError, match=r"\(train\.json, demo\.json\): image_size: trained with 128, "
                       r"this command sets 256\. Leave these keys out"):
        load_network_weights(network, path, expected_settings={"image_size": 256})
    old = tmp_path / "old.pt"  # saved before models recorded their settings: the config's values, with a warning
    torch.save({"model": network.state_dict()}, old)
    with caplog.at_level("WARNING"):
        load_network_weights(network, old, expected_settings={"image_size": 256})
    assert "records no training settings" in caplog.text
