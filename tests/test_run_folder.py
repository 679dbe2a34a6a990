"""A run folder belongs to one run: another data list or other settings are refused before anything
in it is written; the same ones (a killed run restarted) pass, so the run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samssl.data import write_datalist
from samssl.utils.errors import InvalidInputError, find_input_error
from samssl.utils.run_folder import RECORD_FILE, claim_run_folder, recorded_settings

SETTINGS = {"seed": 0, "num_labelled": 2, "image_size": 128, "learning_rate": 3e-4,
            "method": {"_comment": "switches", "semi_supervised": True, "aux_head": True},
            "sam": {"lambda_s": 0.1, "cache_dir": "cache/a", "finetune": {"lr": 0.1, "checkpoint_interval": 5}}}


def _split(folder: str, labelled: int = 2, unlabelled: int = 3) -> dict:
    cases = [{"image": f"{folder}/img{i}.png", "label": f"{folder}/img{i}_seg.png", "id": f"img{i}"}
             for i in range(labelled + unlabelled + 1)]
    return {"labelled": cases[:labelled], "unlabelled": [{k: v for k, v in c.items() if k != "label"}
                                                         for c in cases[labelled:-1]], "validation": cases[-1:]}


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run folder claimed by a first run, with a checkpoint as training leaves it."""
    folder = tmp_path / "runs" / "uamt"
    claim_run_folder(folder, _split("/demo"), SETTINGS)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "checkpoint_iteration=60.pt").write_bytes(b"weights")
    return folder


def test_the_same_data_and_settings_pass_and_rewrite_nothing(run):
    record = json.loads((run / RECORD_FILE).read_text())
    assert set(record) == {"_comment", "datalist_sha256", "settings"}
    assert record["settings"]["method#aux_head"] is True and "method#_comment" not in record["settings"]
    assert json.loads((run / "datalist.json").read_text()) == _split("/demo")
    before = _snapshot(run)
    # a killed run restarted: same split, same settings (tuples and lists, ints and floats read alike)
    claim_run_folder(run, _split("/demo"), {**SETTINGS, "image_size": 128.0})
    assert _snapshot(run) == before


def test_another_data_list_is_refused_naming_it_and_the_ways_out_leaving_the_folder_unchanged(run):
    before = _snapshot(run)
    with pytest.raises(InvalidInputError) as refused:
        write_datalist(run / "datalist.json", _split("/data/ISIC2018", labelled=4, unlabelled=30), run_settings=SETTINGS)
    message = str(refused.value)
    assert "labelled 2 -> 4 cases" in message and "unlabelled 3 -> 30 cases" in message
    assert "images in /demo -> /data/ISIC2018" in message
    assert "--run_name NEW" in message and f"delete {run}" in message
    assert _snapshot(run) == before, "the refused run changed the folder"


def test_other_settings_are_refused_naming_each_one(run):
    before = _snapshot(run)
    other = {**SETTINGS, "num_labelled": 8, "method": {**SETTINGS["method"], "aux_head": False}}
    with pytest.raises(InvalidInputError, match=r"method#aux_head True -> False; num_labelled 2 -> 8") as refused:
        claim_run_folder(run, _split("/demo"), other)
    assert "data list" not in str(refused.value)  # only what differs is named
    assert _snapshot(run) == before


def test_incidental_and_unknown_settings_do_not_make_another_run(run):
    """Caches, work folders and checkpoint intervals say where a run works, not what it trains; a
    setting the record does not know (a bundle that records one more after an update) is not compared."""
    moved = {**SETTINGS, "sam": {"lambda_s": 0.1, "cache_dir": "cache/b", "finetune": {"lr": 0.1, "checkpoint_interval": 9}},
             "output_stride": 16}
    claim_run_folder(run, _split("/demo"), moved)
    assert recorded_settings(moved)["output_stride"] == 16
    assert "sam#cache_dir" not in recorded_settings(moved) and "sam#finetune#lr" in recorded_settings(moved)


def test_a_folder_from_before_records_is_adopted_when_its_split_is_the_same(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "datalist.json").write_text(json.dumps(_split("/demo"), indent=2))
    with pytest.raises(InvalidInputError, match=r"the data list \(labelled 2 -> 4 cases"):
        claim_run_folder(legacy, _split("/demo", labelled=4), SETTINGS)
    assert not (legacy / RECORD_FILE).exists()
    claim_run_folder(legacy, _split("/demo"), SETTINGS)
    assert (legacy / RECORD_FILE).is_file()


def test_bundle_config_refuses_another_run_when_its_split_is_resolved(tmp_path):
    """The hook in a bundle: ``datalist`` (the first thing a training command resolves that writes into
    the run folder) raises the project's input error, reported as the last line, before any write."""
    from bundle_testing import BUNDLES  # same directory, on sys.path under pytest
    from monai.bundle import ConfigParser

    data = tmp_path / "data"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for index in range(4):  # PH2 layout, found by its file names only
        (data / "images" / f"IMD{index:03d}.jpg").write_bytes(b"")
        (data / "masks" / f"IMD{index:03d}_lesion.png").write_bytes(b"")
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "uamt_skin" / "configs" / "train.json"))
    parser.update({"output_dir": str(tmp_path / "run"), "demo_dir": str(tmp_path / "demo"), "dataset_dir": str(data),
                   "num_labelled": 1, "imports": ["$import samssl", "$import samssl.data", "$import samssl.demo"]})
    first = parser.get_parsed_content("datalist")
    assert len(first["labelled"]) == 1 and (tmp_path / "run" / RECORD_FILE).is_file()

    before = _snapshot(tmp_path / "run")
    parser.update({"num_labelled": 2})
    parser.parse(reset=True)
    with pytest.raises(Exception) as refused:
        parser.get_parsed_content("datalist")
    cause = find_input_error(refused.value)
    assert isinstance(cause, InvalidInputError) and "num_labelled 1 -> 2" in str(cause)
    assert _snapshot(tmp_path / "run") == before
