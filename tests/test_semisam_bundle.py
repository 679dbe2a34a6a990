"""The SemiSAM bundle end to end: a short real LA run whose losses fall, the CLI (train, resume,
evaluate) on the demo volumes, and inference that writes a NIfTI on the input's grid."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_testing import run_bundle  # same directory, on sys.path under pytest
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader

import samssl.data as data
from samssl.data.transforms_3d import VolumeLookup
from samssl.engines import MeanTeacherTrainer
from samssl.foundation import EmbeddingCache, build_foundation_model
from samssl.losses import ExponentialRampDown, ExponentialRampUp, SAMAssistedConsistency, dice_ce_loss
from samssl.networks import EMATeacher, VNet

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "semisam_la"


def test_mean_teacher_with_sam_on_real_la_losses_fall(la_root, tmp_path):
    torch.manual_seed(0)
    spacing, patch = 2.5, (32, 32, 16)
    cases = sorted(data.msd_datalist(la_root), key=lambda e: e["id"])[:4]
    split = data.split_labelled(cases, num_labelled=2, seed=0)
    assert all("label" not in entry for entry in split["unlabelled"])
    labelled = CacheDataset(split["labelled"], data.volume_transforms("labelled", patch, spacing), progress=False)
    unlabelled = CacheDataset(
        split["unlabelled"], data.volume_transforms("unlabelled", patch, spacing, patch_location=True), progress=False
    )
    teacher = build_foundation_model("litemedsam")
    teacher.embedding_cache = EmbeddingCache(directory=tmp_path / "cache")
    volumes = VolumeLookup(split["unlabelled"], data.volume_transforms("infer", target_spacing=spacing))
    iterations = 16
    sam = SAMAssistedConsistency(teacher, ExponentialRampDown(0.1, iterations), volumes, uncertainty_passes=2,
                                 slices_per_sample=1, margin=1)
    network = VNet(has_dropout=True)
    trainer = MeanTeacherTrainer(
        "cpu", 1, DataLoader(labelled, batch_size=2, shuffle=True), network,
        torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9), dice_ce_loss(lambda_dice=0.5, lambda_ce=0.5),
        epoch_length=iterations, unlabeled_data_loader=DataLoader(unlabelled, batch_size=1, shuffle=True),
        teacher=EMATeacher(network), consistency_weight=ExponentialRampUp(0.1, iterations), auxiliary_terms=[sam],
    )
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(outputs) == iterations
    assert all({"loss", "supervised", "consistency", "sam_consistency", "sam_consistency_weight"} <= set(o) for o in outputs)
    assert outputs[0]["sam_consistency_weight"] > outputs[-1]["sam_consistency_weight"]  # ramp-down
    assert outputs[0]["consistency_weight"] < outputs[-1]["consistency_weight"]  # ramp-up
    first = np.mean([o["supervised"] for o in outputs[:4]])
    last = np.mean([o["supervised"] for o in outputs[-4:]])
    assert last < 0.85 * first, f"supervised loss did not fall: {first:.3f} -> {last:.3f}"
    first_total = np.mean([o["loss"] for o in outputs[:4]])
    last_total = np.mean([o["loss"] for o in outputs[-4:]])
    assert last_total < first_total


def test_bundle_trains_resumes_evaluates_and_infers_a_nifti(la_root, tmp_path):
    run = tmp_path / "run"
    fast = ["--output_dir", str(run), "--model_dir", str(run), "--num_iterations", "4", "--epoch_length", "2",
            "--checkpoint_interval", "2", "--patch_size", "[32,32,32]", "--sam#cache_dir", str(tmp_path / "cache"),
            "--demo_dir", str(tmp_path / "demo")]
    result = run_bundle(BUNDLE, "training", ["train.json", "demo.json"], *fast)
    assert (run / "model.pt").is_file() and (run / "datalist.json").is_file()
    split = json.loads((run / "datalist.json").read_text())
    assert split["unlabelled"] and all("label" not in e for e in split["unlabelled"])
    metrics = json.loads((run / "validation_metrics.json").read_text())
    assert {"dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel"} <= set(metrics["summary"])
    assert "sam_consistency" in result.stdout + result.stderr

    # re-running the finished command resumes from the final checkpoint instead of training again
    again = run_bundle(BUNDLE, "training", ["train.json", "demo.json"], *fast)
    assert "resum" in (again.stdout + again.stderr).lower()

    run_bundle(BUNDLE, "evaluating", ["base_evaluate.json", "evaluate.json"], "--checkpoint", str(run / "model.pt"), "--output_dir", str(run / "eval"),
            "--dataset_dir", str(tmp_path / "demo" / "volumes"), "--target_spacing", "1.25",
            "--patch_size", "[32,32,32]", "--num_workers", "0", "--prediction_dir", str(run / "eval" / "masks"))
    test = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert test["num_cases"] == 6 and test["summary"]["dice"]["mean"] is not None
    masks = sorted((run / "eval" / "masks").glob("*_seg.nii.gz"))  # on each input's own grid and affine
    assert len(masks) == 6
    demo_case = nib.load(sorted((tmp_path / "demo" / "volumes" / "imagesTr").glob("*.nii.gz"))[0])
    assert nib.load(masks[0]).shape[:3] == demo_case.shape[:3]
    np.testing.assert_allclose(nib.load(masks[0]).affine, demo_case.affine, atol=1e-4)
    rows = (run / "eval" / "test_metrics.csv").read_text().splitlines()
    assert rows[0].startswith("id,dice") and len(rows) == 7
    assert (run / "eval" / "test_overlay.png").is_file()  # mid-slice overlays

    volume = Path(sorted(data.msd_datalist(la_root), key=lambda e: e["id"])[0]["image"])
    run_bundle(BUNDLE, "inferring", ["base_inference.json", "inference.json"], "--input", str(volume), "--checkpoint", str(run / "model.pt"),
            "--output_dir", str(run / "pred"), "--target_spacing", "1.25", "--patch_size", "[32,32,32]")
    written = list((run / "pred").glob("*_seg.nii.gz"))
    assert len(written) == 1
    source, mask = nib.load(volume), nib.load(written[0])
    assert mask.shape[:3] == source.shape[:3]
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}


def test_inference_input_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.nifti_datalist(str(tmp_path / "missing.nii.gz"))
    with pytest.raises(FileNotFoundError, match="no .nii"):
        data.nifti_datalist(str(tmp_path))
    (tmp_path / "b.nii.gz").touch()
    (tmp_path / "a.nii").touch()
    assert [Path(e["image"]).name for e in data.nifti_datalist(str(tmp_path))] == ["a.nii", "b.nii.gz"]
