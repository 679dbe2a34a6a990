"""SSL-MedSAM2's nnU-Net backend: a raw dataset nnU-Net accepts, and Algorithm 1 run through nnunetv2 itself."""

from __future__ import annotations

import json
import re
import warnings

import nibabel as nib
import numpy as np
import pytest
from bundle_testing import bundle_fixture, la_subset, use_bundle  # same directory, on sys.path under pytest

pytest.importorskip("nnunetv2", reason="the nnU-Net backend needs nnunetv2 (the project's 'nnunet' extra)")
use_bundle("ssl_medsam2")
from scripts import nnunet_backend  # noqa: E402  (the bundle's own scripts package, made importable above)

_bundle_scripts = bundle_fixture("ssl_medsam2")


def _soft_pseudo_label(label_file, out_file):
    """A probability-valued pseudo-label on the label's grid (what a propagator may leave behind)."""
    label = nib.load(str(label_file))
    soft = (np.asarray(label.dataobj) > 0).astype(np.float32) * 0.9 + 0.05
    nib.save(nib.Nifti1Image(soft, label.affine), str(out_file))
    return out_file


def test_raw_dataset_passes_nnunets_own_integrity_check(la_root, tmp_path):
    subset = la_subset(la_root, tmp_path / "la", 3)
    entries = json.loads((subset / "dataset.json").read_text())["training"]
    cases = [{"image": str(subset / e["image"]), "label": str(subset / e["label"])} for e in entries]
    cases[2]["label"] = str(_soft_pseudo_label(cases[2]["label"], tmp_path / "pseudo.nii.gz"))
    dataset = tmp_path / "nnUNet_raw" / "Dataset501_SSLMedSAM2"

    names = nnunet_backend.write_raw_dataset(cases, dataset)

    nnunet_backend.verify_raw_dataset(dataset)  # raises on anything nnU-Net would refuse
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == sorted(f"{n}_0000.nii.gz" for n in names)
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"] == {"background": 0, "foreground": 1}
    written = nib.load(str(dataset / "labelsTr" / f"{list(names)[2]}.nii.gz"))
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) == {0, 1}  # the soft map thresholded at 0.5
    np.testing.assert_allclose(written.affine, nib.load(cases[2]["image"]).affine, atol=1e-4)


def test_a_label_off_its_image_grid_or_a_bad_folder_name_is_refused(tmp_path):
    image = tmp_path / "case_a.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), str(image))
    label = tmp_path / "case_a_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), np.eye(4)), str(label))
    with pytest.raises(ValueError, match="voxel grid"):
        nnunet_backend.write_raw_dataset([{"image": image, "label": label}], tmp_path / "Dataset001_X")
    with pytest.raises(ValueError, match="DatasetXXX_Name"):
        nnunet_backend.write_raw_dataset([{"image": image, "label": label}], tmp_path / "raw")
    assert nnunet_backend.case_identifiers(["p1/GED4.nii.gz", "p2/GED4.nii.gz", "p2/T1.nii.gz"]) == [
        "p1_GED4", "p2_GED4", "T1"]  # one folder per patient
    with pytest.raises(ValueError, match="same nnU-Net case name"):
        nnunet_backend.case_identifiers(["a/x/case.nii.gz", "b/x/case.nii.gz"])


def _synthetic_cases(folder, count, shape=(40, 40, 24)):
    """Volumes with a bright ball at a case-dependent place; the ball is the label."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    cases = []
    for i in range(count):
        centre = np.array(shape) / 2 + rng.integers(-4, 5, size=3)
        ball = (np.linalg.norm(grid - centre, axis=-1) < 7).astype(np.uint8)
        image = ball * 2.0 + rng.normal(0, 0.3, shape)
        affine = np.diag([1.25, 1.25, 1.25, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(folder / f"case_{i:02d}.nii.gz"))
        nib.save(nib.Nifti1Image(ball, affine), str(folder / f"case_{i:02d}_label.nii.gz"))
        cases.append({"image": str(folder / f"case_{i:02d}.nii.gz"), "label": str(folder / f"case_{i:02d}_label.nii.gz")})
    return cases


@pytest.mark.slow
def test_nnunet_rounds_hold_each_case_out_once_reuse_the_plans_and_ensemble_the_folds(tmp_path):
    cases = _synthetic_cases(tmp_path / "data", 6)
    labelled = cases[:2]
    # the initial pseudo-labels (TFFS's role) are the true balls here; no ground truth is read for them otherwise
    unlabelled = [{"image": c["image"], "pseudo_label": c["label"]} for c in cases[2:]]
    fsl = nnunet_backend.NnUNetFoldRetraining(labelled, unlabelled, tmp_path / "fsl", num_folds=2, rounds=2, epochs=1,
                                              iterations_per_epoch=2, use_mirroring=False, seed=0,
                                              guards=False)  # the plain Algorithm 1; the guards: the next test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_dir = fsl.run()

    assert model_dir == fsl.model_dir(1)
    # nnU-Net's predictor writes the held-out pseudo-labels: the empty ones are named, as for every other writer
    for r in range(2):
        empty = [p.name for p in sorted(fsl.round_dir(r).glob("held_out_fold*/*.nii.gz"))
                 if not np.asarray(nib.load(str(p)).dataobj).any()]
        named = [str(w.message) for w in caught if f"in {fsl.round_dir(r)} are empty" in str(w.message)]
        assert len(named) == (1 if empty else 0)
        assert all(name in named[0] for name in empty[:5])
    for r in range(2):
        splits = json.loads((fsl.round_dir(r) / "nnUNet_preprocessed" / fsl.dataset_name / "splits_final.json").read_text())
        held_out = sorted(name for split in splits for name in split["val"])
        assert held_out == ["case_02", "case_03", "case_04", "case_05"]  # every unlabelled case once per round
        assert all({"case_00", "case_01"} <= set(split["train"]) and not set(split["val"]) & set(split["train"])
                   for split in splits)
        for k in range(2):
            assert (fsl.model_dir(r) / f"fold_{k}" / "checkpoint_final.pth").is_file()
    plans = [json.loads((fsl.round_dir(r) / "nnUNet_preprocessed" / fsl.dataset_name / "nnUNetPlans.json").read_text())
             for r in range(2)]
    assert plans[0] == plans[1]  # round 1 re-trains the very same network on refreshed labels
    round1_labels = sorted(p.name for p in (fsl.round_dir(0)).glob("held_out_fold*/*.nii.gz"))
    assert round1_labels == [f"case_{i:02d}.nii.gz" for i in range(2, 6)]

    outputs = fsl.predict([cases[0]["image"]], tmp_path / "pred")
    prediction = nib.load(str(outputs[0]))
    assert prediction.shape == (40, 40, 24)
    assert set(np.unique(np.asarray(prediction.dataobj)).tolist()) <= {0, 1}

    mtimes = {p: p.stat().st_mtime for p in fsl.root.rglob("checkpoint_final.pth")}
    # a fold that lost the structure on a case: the rerun reads nnU-Net's files and names it
    lost = sorted(fsl.round_dir(1).glob("held_out_fold*/*.nii.gz"))[0]
    written = nib.load(str(lost))
    nib.save(nib.Nifti1Image(np.zeros(written.shape, np.uint8), written.affine), str(lost))
    named = rf"pseudo-labels in {re.escape(str(fsl.round_dir(1)))} are empty \(.*{re.escape(lost.name)}"
    with pytest.warns(UserWarning, match=named):
        fsl.run()  # everything is on disk: nothing trains again
    assert {p: p.stat().st_mtime for p in fsl.root.rglob("checkpoint_final.pth")} == mtimes


def test_nnunet_rounds_leave_implausible_pseudo_labels_out_of_the_splits_and_stop_on_an_agreement_drop(
        tmp_path, monkeypatch):
    """nnU-Net's planning, training and prediction mocked: only the rounds' bookkeeping runs."""
    cases = _synthetic_cases(tmp_path / "data", 6)
    labelled, pool = cases[:2], cases[2:]
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 24), np.uint8), np.diag([1.25, 1.25, 1.25, 1.0])), str(empty))
    unlabelled = [{"image": c["image"], "pseudo_label": str(empty) if i == 0 else c["label"]} for i, c in enumerate(pool)]
    fsl = nnunet_backend.NnUNetFoldRetraining(labelled, unlabelled, tmp_path / "fsl", num_folds=2, rounds=3, epochs=1,
                                              iterations_per_epoch=1, seed=0)
    splits: dict[int, list] = {}
    truth = {c["image"]: c["label"] for c in cases}

    def prepare(r, pseudo, folds, excluded=()):
        splits[r] = [[e["image"] for e in fold["train"] if e["image"] not in set(excluded)] for fold in folds]

    def train(r, k):
        final = fsl.model_dir(r) / f"fold_{k}" / "checkpoint_final.pth"
        final.parent.mkdir(parents=True, exist_ok=True)
        final.write_bytes(b"stub")
        return final

    def predict(r, k, images):  # round 0 finds each ball, round 1 loses every one (a collapse)
        targets = fsl.held_out_files(r, k, images)
        for image, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = nib.load(truth[image] if r == 0 else str(empty))
            nib.save(nib.Nifti1Image(np.asarray(source.dataobj), source.affine), str(target))
        return {image: str(target) for image, target in targets.items()}

    monkeypatch.setattr(fsl, "prepare_round", prepare)
    monkeypatch.setattr(fsl, "train_fold", train)
    monkeypatch.setattr(fsl, "predict_held_out", predict)
    with pytest.warns(UserWarning, match="stopped after round 1"):
        model_dir = fsl.run()
    assert model_dir == fsl.model_dir(0) and fsl.deployed_round == 0, "round 1 collapsed: round 0 is deployed"
    assert sorted(splits) == [0, 1], "round 2 never runs"
    assert all(pool[0]["image"] not in train for train in splits[0]), "the empty pseudo-label trains no fold"
    record = json.loads((fsl.round_dir(0) / "round.json").read_text())
    assert [e["image"] for e in record["excluded_pseudo_labels"]] == [pool[0]["image"]]
    assert record["agreement"] == 1.0 and json.loads((fsl.round_dir(1) / "round.json").read_text())["agreement"] == 0.0
    prepared = json.loads((fsl.round_dir(0) / "stages" / "prepare" / "stage.json").read_text())
    assert [e["image"] for e in prepared["inputs"]["excluded_pseudo_labels"]] == [pool[0]["image"]]
