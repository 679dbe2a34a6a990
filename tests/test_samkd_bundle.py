"""The dual-task SAM-distillation bundle end to end on real images: losses fall, resume, evaluate,
full-size inference with the main network only, TorchScript export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_testing import (  # same directory, on sys.path under pytest
    bundle_fixture,
    ph2_subset,
    run_bundle,
    use_bundle,
)
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = use_bundle("samkd_dualtask_skin")
_bundle_scripts = bundle_fixture("samkd_dualtask_skin")

from ignite.engine import Events  # noqa: E402
from monai.data import CacheDataset, DataLoader, load_net_with_metadata  # noqa: E402
from scripts.data import prepare_fold_split  # noqa: E402
from scripts.mobilenet_unet import MobileNetDualTaskUNet  # noqa: E402
from scripts.model import build_segmenter, parameter_groups, sam_adapters  # noqa: E402
from scripts.trainer import DualTaskSamKDTrainer  # noqa: E402
from scripts.transforms import training_transforms  # noqa: E402
from scripts.vit_dual_task import ViTDualTaskNet  # noqa: E402

import samssl.data as data  # noqa: E402
from samssl.foundation import DensePromptDecoder  # noqa: E402
from samssl.foundation.cache_store import default_cache_dir  # noqa: E402
from samssl.handlers import PrecomputeEmbeddings, load_network_weights
from samssl.losses import (
    Constant,  # noqa: E402
    DualTaskLoss,  # noqa: E402
)
from samssl.networks import DualTaskOutputs, UNet2D  # noqa: E402

# A small, fast configuration of the bundle for tests (same code paths as the presets).
FAST = ["--image_size", "64", "--batch_size", "2", "--unlabelled_batch_size", "2", "--num_workers", "0",
        "--epoch_length", "2", "--checkpoint_interval", "2", "--method#freeze_teacher_encoder", "True"]


def test_full_method_losses_fall_on_real_images(ph2_root):
    torch.manual_seed(0)
    split = data.split_labelled(data.ph2_datalist(ph2_root)[:6], num_labelled=3, seed=0)
    labelled = CacheDataset(split["labelled"], training_transforms(True, 64), progress=False)
    unlabelled = CacheDataset(split["unlabelled"], training_transforms(False, 64), progress=False)
    sam = build_segmenter(True)  # the real LiteMedSAM, with decoder adapters
    main, psi = MobileNetDualTaskUNet(), DensePromptDecoder()
    teacher = ViTDualTaskNet(sam, freeze_encoder=True)
    adapters = sam_adapters(sam)
    trainer = DualTaskSamKDTrainer(
        device="cpu", max_epochs=1, epoch_length=10,
        train_data_loader=DataLoader(labelled, batch_size=3), unlabeled_data_loader=DataLoader(unlabelled, batch_size=3),
        network=DualTaskOutputs(main), optimizer=torch.optim.AdamW(parameter_groups(main, teacher, psi, adapters, lr=3e-3)),
        loss_function=DualTaskLoss(), teacher_network=teacher, sam=sam, prompt_decoder=psi,
        sam_parameters=list(psi.parameters()) + list(adapters.parameters()), consistency_weight=Constant(0.5),
    )
    PrecomputeEmbeddings([labelled, unlabelled], progress=False).attach(trainer)  # segmenter from the trainer
    losses: list[dict] = []
    misses_at_first_iteration = []
    trainer.add_event_handler(Events.ITERATION_STARTED(once=1), lambda e: misses_at_first_iteration.append(sam.embedding_cache.misses))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(dict(e.state.output)))
    trainer.run()
    assert misses_at_first_iteration == [6]  # all 6 images embedded before training started
    assert len(losses) == 10
    assert all({"loss", "supervised", "teacher_supervised", "sam", "kd", "pseudo_seg", "unsupervised"} <= set(o) for o in losses)
    for key in ("loss", "supervised", "teacher_supervised"):
        first = np.mean([o[key] for o in losses[:3]])
        last = np.mean([o[key] for o in losses[-3:]])
        assert last < 0.9 * first, f"{key} did not fall: {first:.3f} -> {last:.3f}"
    assert sam.embedding_cache.misses == 6  # ... and training found every one of them in the cache
    assert trainer.embedding_segmenter() is sam


def test_bundle_trains_resumes_evaluates_and_infers_full_size(ph2_root, isic_root, tmp_path):
    train_dir = ph2_subset(ph2_root, tmp_path / "ph2", count=6)
    run = tmp_path / "run"
    common_args = ["--dataset_dir", str(train_dir), "--num_labelled", "2", "--num_val", "2",
                   "--output_dir", str(run), "--model_dir", str(run / "models"), *FAST]

    first = run_bundle(BUNDLE, "training", ["train.json"], *common_args, "--max_epochs", "1")
    assert "starting fresh" in first.stdout + first.stderr
    split = json.loads((run / "datalist.json").read_text())
    assert (len(split["labelled"]), len(split["unlabelled"]), len(split["validation"])) == (2, 2, 2)
    assert all("label" not in e for e in split["unlabelled"])
    # every training image embedded once, in the shared folder ($SAMSSL_CACHE_DIR: the test's own), and counted
    assert len(list(default_cache_dir().rglob("*.pt"))) == 4
    assert "embedding cache: 4 encoded" in first.stdout + first.stderr
    report = json.loads((run / "validation_metrics.json").read_text())
    assert report["num_cases"] == 2 and 0.0 <= report["summary"]["dice"]["mean"] <= 1.0

    # Running again with more epochs continues from the last checkpoint instead of starting over.
    second = run_bundle(BUNDLE, "training", ["train.json"], *common_args, "--max_epochs", "2")
    assert "resumed from" in second.stdout + second.stderr and "iteration 2" in second.stdout + second.stderr
    assert "embedding cache: 0 encoded" in second.stdout + second.stderr  # a second run on the same data embeds nothing
    state = torch.load(next((run / "checkpoints").glob("checkpoint_final_iteration=4.pt")), weights_only=True)
    assert {"main", "teacher", "prompt_decoder", "sam_adapters"} == {k.split(".")[0] for k in state["model"]}

    # Evaluation on a labelled folder with the deployed main network.
    run_bundle(BUNDLE, "evaluating", ["base_evaluate.json", "evaluate.json"], "--dataset_dir", str(train_dir), "--output_dir", str(run / "eval"),
            "--checkpoint", str(run / "models" / "model.pt"), "--image_size", "64", "--num_workers", "0")
    assert json.loads((run / "eval" / "test_metrics.json").read_text())["num_cases"] == 6
    assert len((run / "eval" / "test_metrics.csv").read_text().splitlines()) == 7  # header + one row per case
    assert (run / "eval" / "test_overlay.png").is_file()

    # Inference on a full-size ISIC original: the mask comes back at the image's own size.
    largest = max(data.isic_datalist(isic_root), key=lambda e: Path(e["image"]).stat().st_size)["image"]
    run_bundle(BUNDLE, "inferring", ["base_inference.json", "inference.json"], "--input", largest, "--output_dir", str(run / "pred"),
            "--checkpoint", str(run / "models" / "model.pt"), "--image_size", "64")
    mask = Image.open(run / "pred" / (Path(largest).stem + "_seg.png"))
    assert mask.size == Image.open(largest).size
    assert set(np.unique(np.asarray(mask))) <= {0, 255}

    # The deployed main network exports to TorchScript (run from the bundle folder, as the zoo does):
    # MONAI's standard ckpt_export, and the bundle's `export` with the batch norms folded.
    weights = run / "models" / "model.pt"
    standard, folded = run / "model.ts", run / "model_folded.ts"
    run_bundle(BUNDLE, "network_def", ["base_inference.json", "inference.json"], "--filepath", str(standard), "--ckpt_file", str(weights),
            "--meta_file", str(BUNDLE / "configs" / "metadata.json"), "--key_in_ckpt", "model", cwd=BUNDLE,
            verb="ckpt_export")
    exported = run_bundle(BUNDLE, "export", ["base_inference.json", "inference.json"], "--checkpoint", str(weights),
                          "--torchscript_file", str(folded), cwd=BUNDLE)
    assert str(folded) in exported.stdout
    deployed = load_network_weights(MobileNetDualTaskUNet(), weights).eval()
    x = torch.rand(1, 3, 64, 64)
    for path in (standard, folded):
        scripted, meta, extra = load_net_with_metadata(str(path), more_extra_files=["inference.json"])
        assert meta["name"] == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["name"]
        assert json.loads(extra["inference.json"])["network_def"]["_target_"] == "scripts.mobilenet_unet.MobileNetDualTaskUNet"
        if path == folded:  # the bundle's export embeds the whole inference config: its part merged onto the 2D base
            assert json.loads(extra["inference.json"])["postprocessing"]["transforms"][-1]["_target_"] == "SaveImaged"
        with torch.no_grad():
            assert torch.allclose(scripted(x), deployed(x), atol=1e-5)
    assert not any("BatchNorm" in name for name in (m.original_name for m in torch.jit.load(str(folded)).modules()))


def test_five_fold_option_holds_out_a_fold(ph2_root, tmp_path):
    subset = ph2_subset(ph2_root, tmp_path / "ph2", count=10)
    seen = []
    for fold in range(5):
        split = prepare_fold_split(subset, tmp_path / f"fold{fold}.json", fraction=0.25, num_folds=5, fold=fold)
        ids = {e["id"] for e in split["validation"]}
        assert len(ids) == 2 and not ids & {e["id"] for e in split["labelled"] + split["unlabelled"]}
        assert len(split["labelled"]) == 2 and len(split["unlabelled"]) == 6
        seen += ids
    assert len(set(seen)) == 10  # every case is held out exactly once
    with pytest.raises(ValueError, match="fold"):
        prepare_fold_split(subset, tmp_path / "bad.json", num_labelled=2, num_folds=5, fold=5)


def test_inference_refuses_a_checkpoint_of_another_model(tmp_path):
    wrong = tmp_path / "unet.pt"
    torch.save(UNet2D().state_dict(), wrong)
    with pytest.raises(ValueError, match="different model"):
        load_network_weights(MobileNetDualTaskUNet(), wrong)


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_network_weights(MobileNetDualTaskUNet(), tmp_path / "missing.pt")
