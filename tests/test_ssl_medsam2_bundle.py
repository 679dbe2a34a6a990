"""The SSL-MedSAM2 bundle end to end on real LA volumes: TFFS pseudo-labels, one FSL round of two
folds, the deployed fold ensemble scored, TFFS scored alone, the same rounds through the real
nnU-Net, evaluate.json on the trained model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bundle_testing import bundle_fixture, la_subset, run_bundle  # same directory, on sys.path under pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "ssl_medsam2"
_active = bundle_fixture("ssl_medsam2")

# coarse LA (4 mm: about 32 x 22 x 14 voxels; LiteMedSAM encodes each slice in ~1.5 s on 2 cores), tiny schedule
FAST = ["--target_spacing", "4.0", "--patch_size", "[32,32,16]", "--network_patch_size", "[32,32,16]", "--filters", "[4,8,16,32]",
        "--tffs#repeats", "1", "--tffs#frame_size", "64", "--fsl#num_folds", "2", "--fsl#rounds", "1",
        "--fsl#training#num_iterations", "3", "--fsl#training#checkpoint_interval", "2",
        "--fsl#training#sw_batch_size", "1", "--fsl#training#sw_overlap", "0.25"]


def test_bundle_trains_scores_tffs_alone_and_evaluates(la_root, tmp_path):
    subset = la_subset(la_root, tmp_path / "la", 4)
    run = tmp_path / "run"
    cache = tmp_path / "frame_embeddings"
    common_args = ["--dataset_dir", str(subset), "--num_labelled", "1", "--num_val", "1", "--tffs#cache_dir", str(cache), *FAST]
    result = run_bundle(BUNDLE, "training", ["train.json"], "--output_dir", str(run), "--model_dir", str(run),
                        *common_args)
    assert "deployed ssl_medsam2 model (2 network(s))" in result.stdout
    split = json.loads((run / "datalist.json").read_text())
    assert len(split["labelled"]) == 1 and len(split["unlabelled"]) == 2 and len(split["validation"]) == 1
    tffs_manifest = json.loads((run / "tffs" / "manifest.json").read_text())
    assert sorted(c["image"] for c in tffs_manifest["cases"]) == sorted(e["image"] for e in split["unlabelled"])
    for fold in (0, 1):
        assert (run / "fsl" / "round0" / f"fold{fold}" / "model.pt").exists()
    # each frame encoded once, kept on disk for the other seeds and variants (~18 slices per volume): the
    # two unlabelled volumes and the labelled one, whose frames are the default affinity memory's conditioning frames
    assert 20 <= len(list(cache.glob("*/*.pt"))) <= 3 * 20
    metrics = json.loads((run / "validation_metrics.json").read_text())
    assert metrics["num_cases"] == 1 and 0.0 <= metrics["summary"]["dice"]["mean"] <= 1.0

    # TFFS alone on the validation case, with the same split (the paper's "Ours-TFFS" row)
    alone = tmp_path / "tffs_alone"
    run_bundle(BUNDLE, "training", ["train.json"], "--output_dir", str(alone), "--model_dir", str(alone),
               "--tffs#alone", "True", *common_args)
    assert not (alone / "model.pt").exists(), "scoring TFFS alone trains nothing"
    scored = json.loads((alone / "validation_metrics.json").read_text())  # at 4 mm and R = 1 the value means little
    assert scored["num_cases"] == 1 and 0.0 <= scored["summary"]["dice"]["mean"] <= 1.0

    # the same FSL round through the real nnU-Net, from the same TFFS pseudo-labels (shared work_dir)
    if importlib.util.find_spec("nnunetv2") is not None:  # the 'nnunet' extra
        nn_run = tmp_path / "nnunet"
        result = run_bundle(BUNDLE, "training", ["train.json"], "--output_dir", str(nn_run), "--model_dir", str(nn_run),
                            "--work_dir", str(run), "--fsl#backend", "nnunetv2", "--fsl#nnunet#epochs", "1",
                            "--fsl#nnunet#iterations_per_epoch", "2", "--fsl#nnunet#use_mirroring", "False",
                            "--fsl#nnunet#spacing", "4.0", *common_args)
        assert "deployed nnU-Net fold ensemble" in result.stdout
        assert len(list((run / "nnunet_fsl" / "round0").glob("held_out_fold*/*.nii.gz"))) == 2  # each case once
        scored = json.loads((nn_run / "validation_metrics.json").read_text())  # nnU-Net's own prediction files
        assert scored["num_cases"] == 1 and 0.0 <= scored["summary"]["dice"]["mean"] <= 1.0
        assert len(list((run / "nnunet_predictions").glob("*.nii.gz"))) == 1

    # evaluate the deployed ensemble (the harness writes its test masks this way)
    run_bundle(BUNDLE, "evaluating", ["base_evaluate.json", "evaluate.json"], "--checkpoint", str(run / "model.pt"),
               "--output_dir", str(run / "eval"), "--dataset_dir", str(subset), *FAST)
    assert json.loads((run / "eval" / "test_metrics.json").read_text())["num_cases"] == 4
    # inference.json runs on a real LA volume in tests/test_model_zoo.py (packaged, in a fresh folder)
