"""The UAMT bundle end to end: training on real images, resume, evaluation, full-size inference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

from samssl.handlers import read_training_trace

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = use_bundle("uamt_skin")
_bundle_scripts = bundle_fixture("uamt_skin")

from ignite.engine import Events  # noqa: E402
from monai.data import CacheDataset, DataLoader  # noqa: E402
from scripts.network import DualHeadDeepLabV3  # noqa: E402
from scripts.trainer import UAMTTrainer  # noqa: E402

import samssl.data as data  # noqa: E402
from samssl.handlers import load_network_weights
from samssl.losses import Constant  # noqa: E402
from samssl.networks import (
    EMATeacher,
    UNet2D,  # noqa: E402
)

# A small, fast configuration of the bundle for tests (same code paths as the presets).
FAST = ["--image_size", "64", "--output_stride", "32", "--batch_size", "2", "--unlabelled_batch_size", "2",
        "--num_workers", "0", "--epoch_length", "2", "--checkpoint_interval", "2"]


@pytest.mark.parametrize(("teacher_batch_norm", "joint_batch_norm"), [("running", False), ("batch", False), ("running", True)])
def test_uamt_training_loss_falls_on_real_images(ph2_root, teacher_batch_norm, joint_batch_norm):
    torch.manual_seed(0)
    split = data.split_labelled(data.ph2_datalist(ph2_root)[:8], num_labelled=4, seed=0)
    labelled = CacheDataset(split["labelled"], data.dermoscopy_transforms("labelled", 64), progress=False)
    unlabelled = CacheDataset(split["unlabelled"], data.dermoscopy_transforms("unlabelled", 64), progress=False)
    network = DualHeadDeepLabV3(output_stride=32)
    trainer = UAMTTrainer(
        device="cpu", max_epochs=1, epoch_length=14,
        train_data_loader=DataLoader(labelled, batch_size=4), unlabeled_data_loader=DataLoader(unlabelled, batch_size=4),
        network=network, optimizer=torch.optim.AdamW(network.parameters(), lr=1e-3), teacher=EMATeacher(network, batch_norm=teacher_batch_norm),
        loss_weight=Constant(0.5), joint_batch_norm=joint_batch_norm,
    )
    losses: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(dict(e.state.output)))
    trainer.run()
    assert len(losses) == 14
    assert all(set(o) >= {"loss", "supervised", "unsupervised", "unsupervised_mixed"} for o in losses)
    first = np.mean([o["loss"] for o in losses[:3]])
    last = np.mean([o["loss"] for o in losses[-3:]])
    assert last < 0.8 * first, f"training loss did not fall: {first:.3f} -> {last:.3f}"


def test_bundle_trains_resumes_evaluates_and_infers_full_size(ph2_root, isic_root, tmp_path):
    # 5 unlabelled images in batches of 2: the trailing batch of one is dropped (DeepLabv3's pooled
    # branch cannot train batch norm on a single image)
    train_dir = ph2_subset(ph2_root, tmp_path / "ph2", count=11)
    run = tmp_path / "run"
    common_args = ["--dataset_dir", str(train_dir), "--num_labelled", "4", "--num_val", "2",
                   "--output_dir", str(run), "--model_dir", str(run / "models"), *FAST]

    first = run_bundle(BUNDLE, "training", ["train.json"], *common_args, "--max_epochs", "1")
    assert "starting fresh" in first.stdout + first.stderr
    split = json.loads((run / "datalist.json").read_text())
    assert (len(split["labelled"]), len(split["unlabelled"]), len(split["validation"])) == (4, 5, 2)
    assert all("label" not in e for e in split["unlabelled"])
    report = json.loads((run / "validation_metrics.json").read_text())
    assert report["num_cases"] == 2 and 0.0 <= report["summary"]["dice"]["mean"] <= 1.0
    assert (run / "validation_overlay.png").is_file() and (run / "models" / "model.pt").is_file()

    # Running again with more epochs continues from the last checkpoint instead of starting over.
    second = run_bundle(BUNDLE, "training", ["train.json"], *common_args, "--max_epochs", "2")
    assert "resumed from" in second.stdout + second.stderr and "iteration 2" in second.stdout + second.stderr
    # every iteration once, across the resume, with the foreground shares of labels, predictions, pseudo-labels
    trace = read_training_trace(run)
    assert [r["iteration"] for r in trace] == [1, 2, 3, 4]
    for key in ("label_foreground", "prediction_foreground", "pseudo_foreground", "unlabelled_prediction_foreground",
                "mixed_pseudo_foreground", "lambda", "supervised"):
        assert all(key in r for r in trace), key
    assert all(0.0 < r["label_foreground"] < 1.0 for r in trace)

    # Evaluation on a labelled folder, with the deployed (single-head) network.
    run_bundle(BUNDLE, "evaluating", ["base_evaluate.json", "evaluate.json"], "--dataset_dir", str(train_dir), "--output_dir", str(run / "eval"),
            "--checkpoint", str(run / "models" / "model.pt"), "--image_size", "64", "--output_stride", "32",
            "--num_workers", "0", "--prediction_dir", str(run / "eval" / "masks"), "--output_postfix", "segmentation")
    assert json.loads((run / "eval" / "test_metrics.json").read_text())["num_cases"] == 11
    # ... and it wrote each case's mask at the image's own size for outside metric code
    masks = sorted((run / "eval" / "masks").glob("*_segmentation.png"))
    assert len(masks) == 11
    first_case = data.dermoscopy_datalist(train_dir)[0]
    assert Image.open(run / "eval" / "masks" / f"{first_case['id']}_segmentation.png").size == \
        Image.open(first_case["image"]).size

    # The model carries its training settings: evaluated without them (as the docs show), it scores the
    # same; a command that contradicts them is refused with both values, as the last line.
    run_bundle(BUNDLE, "evaluating", ["base_evaluate.json", "evaluate.json"], "--dataset_dir", str(train_dir),
               "--output_dir", str(run / "eval_plain"), "--checkpoint", str(run / "models" / "model.pt"), "--num_workers", "0")
    scores = [json.loads((run / d / "test_metrics.json").read_text())["summary"] for d in ("eval", "eval_plain")]
    assert scores[0] == scores[1]
    refused = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file",
         f"['{BUNDLE / 'configs' / 'base_evaluate.json'}','{BUNDLE / 'configs' / 'evaluate.json'}']",
         "--dataset_dir", str(train_dir), "--output_dir", str(run / "eval_wrong"), "--checkpoint",
         str(run / "models" / "model.pt"), "--image_size", "128", "--num_workers", "0"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert refused.returncode == 1
    assert "image_size: trained with 64, this command sets 128" in refused.stderr.strip().splitlines()[-1]

    # Inference on a full-size ISIC original: the mask comes back at the image's own size, named as
    # the ISIC challenge expects with --output_postfix segmentation.
    largest = max(data.isic_datalist(isic_root), key=lambda e: Path(e["image"]).stat().st_size)["image"]
    run_bundle(BUNDLE, "inferring", ["base_inference.json", "inference.json"], "--input", largest, "--output_dir", str(run / "pred"),
            "--checkpoint", str(run / "models" / "model.pt"), "--output_postfix", "segmentation")  # the model's own size
    mask_file = run / "pred" / (Path(largest).stem + "_segmentation.png")
    mask = Image.open(mask_file)
    assert mask.size == Image.open(largest).size
    assert set(np.unique(np.asarray(mask))) <= {0, 255}

    # The deployed weights export to TorchScript (run from the bundle folder, as the zoo does).
    exported = run / "model.ts"
    run_bundle(BUNDLE, "network_def", ["base_inference.json", "inference.json"], "--filepath", str(exported), "--ckpt_file", str(run / "models" / "model.pt"),
            "--meta_file", str(BUNDLE / "configs" / "metadata.json"), "--key_in_ckpt", "model",
            "--output_stride", "32", cwd=BUNDLE, verb="ckpt_export")
    scripted = torch.jit.load(str(exported))
    deployed = load_network_weights(DualHeadDeepLabV3(output_stride=32, aux_head=False), run / "models" / "model.pt").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(scripted(x), deployed(x), atol=1e-5)


def test_inference_refuses_a_checkpoint_of_another_model(tmp_path):
    wrong = tmp_path / "unet.pt"
    torch.save(UNet2D().state_dict(), wrong)
    with pytest.raises(ValueError, match="different model"):
        load_network_weights(DualHeadDeepLabV3(output_stride=32, aux_head=False), wrong, ignore_prefixes=["fcn_head."])


def test_deployed_network_loads_a_dual_head_training_checkpoint(tmp_path):
    trained = DualHeadDeepLabV3(output_stride=32, aux_head=True)
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    deployed = load_network_weights(DualHeadDeepLabV3(output_stride=32, aux_head=False), path, ignore_prefixes=["fcn_head."])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(trained.eval()(x), deployed.eval()(x))


def test_saved_model_holds_only_the_deployed_network(tmp_path):
    from scripts.network import DeployedWeights

    trained = DualHeadDeepLabV3(output_stride=32, aux_head=True)
    state = DeployedWeights(trained).state_dict()
    assert state and not any(k.startswith("fcn_head.") for k in state)
    DualHeadDeepLabV3(output_stride=32, aux_head=False).load_state_dict(state, strict=True)


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.image_folder_datalist(tmp_path / "nowhere")


def test_every_config_builds_the_tinyvit_student_it_is_asked_for():
    """``--student litemedsam_tinyvit`` reaches the network of training, evaluation and inference alike
    (a training run with it is ~40 s per iteration on 2 cores: the component test trains one step)."""
    from monai.bundle import ConfigParser

    from samssl.utils.bundles import config_with_base

    for name, aux in (("train.json", True), ("evaluate.json", False), ("inference.json", False)):
        parser = ConfigParser()
        parser.read_config([str(p) for p in config_with_base(BUNDLE / "configs" / name)])  # as the CLI merges it
        parser["student"] = "litemedsam_tinyvit"
        network = parser.get_parsed_content("network_def")
        assert type(network).__name__ == "SAMEncoderSegNet" and network.has_aux_head == aux, name


def test_the_teacher_batch_norm_switch_reaches_the_ema_teacher():
    """``method#teacher_batch_norm`` (the ``uamt_batch_stats_teacher`` variant's override) builds the teacher it names."""
    from monai.bundle import ConfigParser

    for value in ("running", "batch"):
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "cpu.json")])
        parser["method#teacher_batch_norm"] = value
        parser["output_stride"] = 32
        assert parser.get_parsed_content("ema_teacher").batch_norm == value


def test_joint_batch_norm_normalises_labelled_and_unlabelled_images_together():
    """``joint_batch_norm``: one forward pass over both batches, split back in order; without it, one pass each."""
    torch.manual_seed(0)
    network = DualHeadDeepLabV3(output_stride=32)
    labelled, unlabelled = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64) * 0.5
    trainers = {joint: UAMTTrainer(device="cpu", max_epochs=1, train_data_loader=[], network=network,
                                   optimizer=torch.optim.SGD(network.parameters(), lr=0.0),
                                   loss_weight=Constant(1.0), joint_batch_norm=joint) for joint in (False, True)}
    bn = next(m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d))

    network.eval()  # running statistics: the two ways give the same outputs, split back to the right images
    with torch.no_grad():
        separate = trainers[False]._student(labelled, unlabelled)
        joint = trainers[True]._student(labelled, unlabelled)
    for (main_s, aux_s), (main_j, aux_j) in zip(separate, joint):
        torch.testing.assert_close(main_j, main_s, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(aux_j, aux_s, atol=1e-4, rtol=1e-4)
    assert joint[0][0].shape[0] == 2 and joint[1][0].shape[0] == 3

    network.train()  # batch statistics: the labelled images' outputs now depend on the unlabelled ones
    before = bn.num_batches_tracked.item()
    with torch.no_grad():
        (main_s, _), _ = trainers[False]._student(labelled, unlabelled)
        assert bn.num_batches_tracked.item() == before + 2
        (main_j, _), _ = trainers[True]._student(labelled, unlabelled)
        assert bn.num_batches_tracked.item() == before + 3
    assert not torch.allclose(main_j, main_s, atol=1e-3)


def test_the_joint_batch_norm_switch_reaches_the_trainer():
    """``method#joint_batch_norm`` (the switch variants and users set) is what the trainer is built with."""
    from monai.bundle import ConfigParser

    for value in (False, True):
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "cpu.json")])
        parser["method#joint_batch_norm"] = value
        assert parser.get_parsed_content("train#trainer#joint_batch_norm") is value
