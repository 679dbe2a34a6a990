"""The SFR bundle end to end: the SFR/SFR+ stages on real LA volumes, a short re-training whose
losses fall, and the CLI (train, SAM alone from the cached stages, evaluate, infer a NIfTI)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_testing import bundle_fixture, run_bundle  # same directory, on sys.path under pytest
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader

import samssl.data as data
from samssl.engines import MeanTeacherTrainer
from samssl.foundation import build_foundation_model
from samssl.losses import ExponentialRampUp, PseudoLabelSupervision, dice_ce_loss
from samssl.networks import EMATeacher, VNet

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "sfr_la"
_active = bundle_fixture("sfr_la")

SPACING = 2.5
SAM_PATCH = (32, 32, 16)


def _split(la_root: Path, count: int = 4, num_labelled: int = 2) -> dict:
    cases = sorted(data.msd_datalist(la_root), key=lambda e: e["id"])[:count]
    return data.split_labelled(cases, num_labelled=num_labelled, seed=0)


@pytest.fixture(scope="module")
def sfr_plus_run(la_root, tmp_path_factory):
    """Two SFR+ rounds on real LA (2 labelled, 2 unlabelled), every case routed back (tau = 0)."""
    from bundle_testing import use_bundle

    use_bundle("sfr_la")
    from scripts.sfr import SFRStages

    split = _split(la_root)
    work = tmp_path_factory.mktemp("sfr")
    seen_training_sets: list[list[dict]] = []
    stages = SFRStages(lambda: build_foundation_model("litemedsam"), split["labelled"], split["unlabelled"], work,
                       SAM_PATCH, SPACING, finetune={"num_iterations": 3, "batch_size": 1, "checkpoint_interval": 2},
                       rounds=2, confidence_threshold=0.0)
    original = stages.finetune

    def spy(round_dir, training_set):
        seen_training_sets.append([dict(e) for e in training_set])
        return original(round_dir, training_set)

    stages.finetune = spy
    entries = stages.run()
    return split, work, entries, seen_training_sets


def test_sfr_plus_rounds_route_confident_cases_into_fine_tuning(sfr_plus_run):
    split, work, entries, training_sets = sfr_plus_run
    unlabelled_images = [e["image"] for e in split["unlabelled"]]
    assert [e["image"] for e in entries] == unlabelled_images
    assert all(set(e) == {"image", "pseudo_label"} and Path(e["pseudo_label"]).is_file() for e in entries)
    for r in (0, 1):
        assert (work / f"round{r}" / "finetune" / "sam_tuned.pt").is_file()
        manifest = json.loads((work / f"round{r}" / "pseudo_labels" / "manifest.json").read_text())
        assert [c["image"] for c in manifest["cases"]] == unlabelled_images
        assert all(0.0 <= c["confidence"] <= 1.0 for c in manifest["cases"])
    routing = json.loads((work / "round0" / "routing" / "routing.json").read_text())
    assert routing["confident"] == unlabelled_images and routing["uncertain"] == []
    assert training_sets[0] == [dict(e) for e in split["labelled"]]
    # round 1 fine-tunes on the labelled cases plus every confident case, its pseudo-label as label
    extra = training_sets[1][len(split["labelled"]):]
    assert [e["image"] for e in extra] == unlabelled_images
    round0 = {c["image"]: c["pseudo_label"] for c in json.loads(
        (work / "round0" / "pseudo_labels" / "manifest.json").read_text())["cases"]}
    assert all(e["label"] == round0[e["image"]] for e in extra)
    # the pseudo-label of a case is on that case's own grid
    for entry in entries:
        source, pseudo = nib.load(entry["image"]), nib.load(entry["pseudo_label"])
        assert pseudo.shape == source.shape[:3]
        np.testing.assert_allclose(pseudo.affine, source.affine, atol=1e-4)


def test_stages_never_carry_unlabelled_ground_truth(la_root, tmp_path):
    from scripts.sfr import SFRStages

    split = _split(la_root)
    poisoned = [{"image": e["image"], "label": str(tmp_path / "missing.nii.gz")} for e in split["unlabelled"]]
    stages = SFRStages(lambda: build_foundation_model("litemedsam"), split["labelled"], poisoned, tmp_path, SAM_PATCH,
                       SPACING)
    assert all(set(e) == {"image"} for e in stages.unlabelled)
    with pytest.raises(ValueError, match="unlabelled list is empty"):
        SFRStages(lambda: build_foundation_model("litemedsam"), split["labelled"], [], tmp_path, SAM_PATCH, SPACING)
    with pytest.raises(ValueError, match="unknown fine-tuning settings"):
        SFRStages(lambda: build_foundation_model("litemedsam"), split["labelled"], poisoned, tmp_path, SAM_PATCH,
                  SPACING, finetune={"iterations": 3})


def test_mean_teacher_with_sfr_pseudo_labels_on_real_la_losses_fall(sfr_plus_run):
    split, _, entries, _ = sfr_plus_run
    torch.manual_seed(0)
    patch = (32, 32, 16)
    labelled = CacheDataset(split["labelled"], data.volume_transforms("labelled", patch, SPACING), progress=False)
    unlabelled = CacheDataset(entries, data.volume_transforms("pseudo_labelled", patch, SPACING), progress=False)
    iterations = 16
    network = VNet(has_dropout=True)
    loss = dice_ce_loss(lambda_dice=0.5, lambda_ce=0.5)
    trainer = MeanTeacherTrainer(
        "cpu", 1, DataLoader(labelled, batch_size=2, shuffle=True), network,
        torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9), loss, epoch_length=iterations,
        unlabeled_data_loader=DataLoader(unlabelled, batch_size=2, shuffle=True), teacher=EMATeacher(network),
        consistency_weight=ExponentialRampUp(0.1, iterations), auxiliary_terms=[PseudoLabelSupervision(loss, 1.0)],
    )
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(outputs) == iterations
    assert all({"supervised", "consistency", "pseudo_label", "pseudo_label_weight"} <= set(o) for o in outputs)
    first = np.mean([o["supervised"] for o in outputs[:4]])
    last = np.mean([o["supervised"] for o in outputs[-4:]])
    assert last < 0.85 * first, f"supervised loss did not fall: {first:.3f} -> {last:.3f}"
    assert np.mean([o["loss"] for o in outputs[-4:]]) < np.mean([o["loss"] for o in outputs[:4]])


def test_bundle_trains_scores_sam_evaluates_and_infers_a_nifti(la_root, tmp_path):
    run = tmp_path / "run"
    fast = ["--output_dir", str(run), "--model_dir", str(run), "--num_iterations", "4", "--epoch_length", "2",
            "--checkpoint_interval", "2", "--patch_size", "[32,32,32]", "--sfr#patch_size", "[96,96,16]",
            "--sfr#finetune#num_iterations", "2", "--sfr#finetune#batch_size", "1",
            "--sfr#finetune#checkpoint_interval", "1", "--demo_dir", str(tmp_path / "demo")]
    result = run_bundle(BUNDLE, "training", ["train.json", "demo.json"], *fast)
    log = result.stdout + result.stderr
    assert (run / "model.pt").is_file() and (run / "sfr" / "round0" / "finetune" / "sam_tuned.pt").is_file()
    assert "pseudo_label" in log and "pseudo-labelling 3 unlabelled volumes" in log
    metrics = json.loads((run / "validation_metrics.json").read_text())
    assert {"dice", "iou", "hd95", "asd"} <= set(metrics["summary"])

    # the fine-tuned SAM alone on the validation volume (the paper's Fig. 1 quantity), from the same
    # SFR folder: SAM is not tuned again and the pseudo-labels are reused (the V-Net's own resume
    # is the shared trainer's, tested with the other bundles)
    sam_run = tmp_path / "sam_alone"
    again = run_bundle(BUNDLE, "training", ["train.json", "demo.json"], *fast[4:], "--output_dir", str(sam_run),
                       "--model_dir", str(sam_run), "--sfr#work_dir", str(run / "sfr"), "--sfr#sam_alone", "True")
    log = again.stdout + again.stderr
    assert "stage fine-tune (round0): done" in log and "stage pseudo-label (round0): done" in log
    assert "fine-tuning" not in log and "pseudo-labelling" not in log, "a finished stage is read back, not recomputed"
    assert json.loads((sam_run / "validation_metrics.json").read_text())["num_cases"] == 1

    run_bundle(BUNDLE, "evaluating", ["base_evaluate.json", "evaluate.json", "demo.json"], "--checkpoint", str(run / "model.pt"),
               "--output_dir", str(run / "eval"), "--dataset_dir", str(tmp_path / "demo" / "volumes"),
               "--patch_size", "[32,32,32]")
    test = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert test["num_cases"] == 6 and test["summary"]["dice"]["mean"] is not None

    volume = Path(sorted(data.msd_datalist(la_root), key=lambda e: e["id"])[0]["image"])
    run_bundle(BUNDLE, "inferring", ["base_inference.json", "inference.json", "cpu.json"], "--input", str(volume),
               "--checkpoint", str(run / "model.pt"), "--output_dir", str(run / "pred"), "--patch_size", "[32,32,32]")
    written = list((run / "pred").glob("*_seg.nii.gz"))
    assert len(written) == 1
    source, mask = nib.load(volume), nib.load(written[0])
    assert mask.shape[:3] == source.shape[:3]
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}


@pytest.mark.parametrize("baseline", ["suponly.json", "mean_teacher.json"])
def test_baselines_never_tune_or_load_sam(tmp_path, baseline):
    """SupOnly and MT share train.json with SFR: resolving its 'training' expression must not run SAM's stages."""
    run = tmp_path / "run"
    result = run_bundle(BUNDLE, "training", ["train.json", "demo.json", f"baselines/{baseline}"],
                        "--output_dir", str(run), "--num_iterations", "2", "--epoch_length", "2",
                        "--checkpoint_interval", "2", "--patch_size", "[32,32,32]", "--demo_dir", str(tmp_path / "demo"))
    log = result.stdout + result.stderr
    assert (run / "model.pt").is_file()
    assert not (run / "sfr").exists(), "a baseline created SAM's work folder"
    assert "fine-tuning" not in log and "pseudo-labelling" not in log
