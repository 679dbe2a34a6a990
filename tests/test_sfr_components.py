"""SFR's parts: stitching, the LoRA-tuned stitched SAM, pseudo-labels and their term, SFR+ routing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_testing import bundle_fixture, use_bundle  # same directory, on sys.path under pytest
from monai.inferers import SlidingWindowInferer

import samssl.data as data
from samssl.data.stitching import SimplifiedStitch, StitchSlicesd, grid_size, stitch_slices, unstitch_slices
from samssl.engines import SelfTrainingTrainer, build_consistency_trainer
from samssl.foundation import build_foundation_model
from samssl.losses import PseudoLabelSupervision, dice_ce_loss
from samssl.networks import VNet
from samssl.stages.pseudo_labels import (
    mean_max_probability,
    route_by_confidence,
    warn_if_confidence_tracks_background,
    warn_if_empty_label_files,
    write_predicted_labels,
    write_pseudo_labels,
)

BUNDLE = use_bundle("sfr_la")  # the stitched SAM is SFR's own (bundles/sfr_la/scripts/stitched_sam.py)
_bundle_scripts = bundle_fixture("sfr_la")

from scripts.stitched_sam import StitchedSAM, set_class_tokens  # noqa: E402

# ------------------------------------------------------------------------------ stitching


@pytest.mark.parametrize("depth", [1, 2, 4, 5, 7, 16, 44, 80, 88])
def test_stitch_round_trip_is_exact_for_any_depth(depth):
    volume = torch.randn(2, 6, 5, depth)  # channels first, non-square slices
    image = stitch_slices(volume)
    g = grid_size(depth)
    assert g * g >= depth > (g - 1) * (g - 1)
    assert image.shape == (2, g * 6, g * 5)
    assert torch.equal(unstitch_slices(image, depth), volume)
    # slice k sits at tile (k // g, k % g), in slice order; tiles after the last slice are zero
    for k in range(depth):
        r, c = divmod(k, g)
        assert torch.equal(image[:, r * 6:(r + 1) * 6, c * 5:(c + 1) * 5], volume[..., k])
    filled = torch.zeros(g * g, dtype=torch.bool)
    filled[:depth] = True
    for k in range(depth, g * g):
        r, c = divmod(k, g)
        assert (image[:, r * 6:(r + 1) * 6, c * 5:(c + 1) * 5] == 0).all()


def test_stitch_keeps_labels_probabilities_and_numpy():
    labels = np.random.default_rng(0).integers(0, 3, size=(1, 8, 8, 11)).astype(np.uint8)
    stitched = stitch_slices(labels)
    assert isinstance(stitched, np.ndarray) and stitched.dtype == np.uint8
    assert np.array_equal(unstitch_slices(stitched, 11), labels)
    probabilities = torch.softmax(torch.randn(3, 8, 8, 11), 0)
    assert torch.equal(unstitch_slices(stitch_slices(probabilities), 11), probabilities)
    with pytest.raises(ValueError, match="holds 4 slices"):
        stitch_slices(torch.zeros(1, 4, 4, 5), grid=2)
    with pytest.raises(ValueError, match="equal tiles"):
        unstitch_slices(torch.zeros(1, 9, 8), depth=4)


def test_stitch_round_trip_on_real_la_volumes(la_root):
    cases = sorted(data.msd_datalist(la_root), key=lambda e: e["id"])[:2]
    transform = data.volume_transforms("eval", target_spacing=1.25)
    for entry in cases:
        item = transform(entry)
        image, label = item["image"], item["label"]
        stitcher = StitchSlicesd(["image", "label"])
        stitched = stitcher({"image": image, "label": label})
        g = grid_size(image.shape[-1])
        assert stitched["image"].shape[-2:] == (g * image.shape[1], g * image.shape[2])
        restored = stitcher.inverse(stitched)
        assert torch.equal(torch.as_tensor(restored["image"]), torch.as_tensor(image))
        assert torch.equal(torch.as_tensor(restored["label"]), torch.as_tensor(label))


def test_simplified_stitch_fixed_tiles_and_square_depth():
    stitcher = SimplifiedStitch(tile=8)
    exact = torch.randn(1, 2, 8, 8, 9)  # tile-sized slices, square depth: exact round trip
    assert stitcher(exact).shape == (1, 2, 24, 24)
    assert torch.equal(stitcher.inverse(stitcher(exact), (8, 8, 9)), exact)
    wide = torch.randn(1, 1, 12, 6, 5)  # cropped in H, padded in W, depth 5 -> 9
    image = stitcher(wide)
    assert image.shape == (1, 1, 24, 24)
    back = stitcher.inverse(image, (12, 6, 5))
    assert back.shape == wide.shape
    assert (back[:, :, :2] == 0).all() and (back[:, :, -2:] == 0).all()  # outside the crop
    labels = (torch.rand(1, 1, 8, 8, 5) > 0.5).float()
    restored = stitcher.inverse(stitcher(labels, nearest=True), (8, 8, 5), nearest=True)
    assert set(restored.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="square"):
        SimplifiedStitch(depth_slices=10)


# ------------------------------------------------------------------------------ stitched SAM


def _encoder_base_weights(model: StitchedSAM) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.teacher.image_encoder.named_parameters() if "lora_" not in n}


def test_lora_tunes_only_lora_and_decoder_and_keeps_base_weights():
    torch.manual_seed(0)
    model = StitchedSAM(build_foundation_model("litemedsam"), num_classes=2, lora_rank=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".mask_decoder." in n for n in trainable)
    assert any("lora_" in n for n in trainable) and any(".mask_decoder." in n for n in trainable)
    assert not any(".prompt_encoder." in n for n in trainable)
    base = _encoder_base_weights(model)
    prompt_before = {n: p.clone() for n, p in model.teacher.prompt_encoder.state_dict().items()}
    patches = torch.randn(1, 1, 32, 32, 4)
    target = (torch.rand(1, 1, 32, 32, 4) > 0.7).long()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    logits = model(patches)
    assert logits.shape == (1, 2, 32, 32, 4)
    dice_ce_loss()(logits, target).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad <= trainable and any("lora_" in n for n in with_grad)
    optimizer.step()
    after = _encoder_base_weights(model)
    assert all(torch.equal(base[n], after[n]) for n in base), "LoRA tuning changed frozen encoder weights"
    assert all(torch.equal(prompt_before[n], v) for n, v in model.teacher.prompt_encoder.state_dict().items())


def test_tuned_weights_save_load_and_merge(tmp_path):
    torch.manual_seed(0)
    model = StitchedSAM(build_foundation_model("litemedsam"), num_classes=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    patches = torch.randn(1, 1, 32, 32, 4)
    for _ in range(2):  # move LoRA B away from zero so it changes the outputs
        optimizer.zero_grad()
        dice_ce_loss()(model(patches), (patches > 0.5).long()).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(patches)
    path = model.save_tuned(tmp_path / "sam_tuned.pt")
    assert path.stat().st_size < 40e6  # LoRA + decoder, not the whole model
    payload = torch.load(path, weights_only=True)
    assert payload["lora_state"] and not any("image_encoder" in k and "lora" not in k for k in payload["lora_state"])
    loaded = StitchedSAM.load_tuned(build_foundation_model("litemedsam"), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(patches), expected)
        merged = loaded.merge()
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(patches), expected, atol=1e-4, rtol=1e-4)


def test_tuned_file_errors_are_clear(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read.*fine-tune again"):
        StitchedSAM.load_tuned(build_foundation_model("litemedsam"), broken)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(ValueError, match="not a fine-tuned teacher file"):
        StitchedSAM.load_tuned(build_foundation_model("litemedsam"), other)
    model = StitchedSAM(build_foundation_model("litemedsam"), lora_rank=0)
    payload = model.tuned_state()
    payload["teacher"] = "sam_vit_b"
    torch.save(payload, other)
    with pytest.raises(ValueError, match="tuned from 'sam_vit_b'"):
        StitchedSAM.load_tuned(build_foundation_model("litemedsam"), other)
    with pytest.raises(ValueError, match="one-channel patches"):
        model(torch.zeros(1, 2, 8, 8, 4))


def test_simplified_stitching_in_the_network_keeps_patch_shapes():
    model = StitchedSAM(build_foundation_model("litemedsam"), num_classes=2, lora_rank=0, simplified_tile=16).eval()
    patches = torch.randn(2, 1, 20, 12, 7)
    stitched = model.stitch(patches)
    assert stitched.shape == (2, 1, 48, 48)  # 16-px tiles, depth 7 -> 9 = 3 x 3
    assert stitched.amin() >= 0  # shifted so that padding is the darkest value
    with torch.no_grad():
        assert model(patches).shape == (2, 2, 20, 12, 7)


def test_class_tokens_start_from_pretrained_tokens():
    teacher = build_foundation_model("litemedsam")
    pretrained = teacher.mask_decoder.mask_tokens.weight.detach().clone()
    set_class_tokens(teacher.mask_decoder, 6)
    tokens = teacher.mask_decoder.mask_tokens.weight
    assert tokens.shape[0] == 6 and len(teacher.mask_decoder.output_hypernetworks_mlps) == 6
    assert torch.equal(tokens[:4], pretrained) and torch.equal(tokens[4:], pretrained[:2])
    with pytest.raises(ValueError, match="at least 2 classes"):
        set_class_tokens(teacher.mask_decoder, 1)


def test_random_init_sam_vit_b_segments_a_stitched_patch_at_1024():
    from samssl.foundation.sam import build_sam_vit

    torch.manual_seed(0)
    model = StitchedSAM(build_sam_vit("sam_vit_b"), num_classes=2).eval()
    assert any("lora_" in n for n, _ in model.named_parameters())  # LoRA on SAM's fused blocked qkv
    sizes = []
    model.teacher.image_encoder.register_forward_hook(lambda module, args, out: sizes.append(tuple(args[0].shape)))
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 16, 16, 3))  # 2 x 2 tiles of 16 px, resized to SAM's 1024
    assert sizes == [(1, 3, 1024, 1024)]
    assert logits.shape == (1, 2, 16, 16, 3) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------ pseudo-labels


def _write_volume(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine), str(path))
    return str(path)


class _Threshold(torch.nn.Module):
    """Logits of 'intensity above the mean' (a stand-in teacher with a known answer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1) * 4


def test_pseudo_labels_are_written_on_the_input_grid_and_never_read_the_label(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 18, 9)).astype(np.float32)
    affine = np.array([[1.5, 0, 0, 3.0], [0, 1.5, 0, -2.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1.0]])
    path = _write_volume(tmp_path / "in" / "case_a.nii.gz", image, affine)
    poisoned = {"image": path, "label": str(tmp_path / "no_such_label.nii.gz")}  # reading it would fail
    transform = data.volume_transforms("infer")
    records = write_pseudo_labels(_Threshold(), [poisoned], transform, SlidingWindowInferer((16, 16, 8)),
                                  tmp_path / "pl", fingerprint="a", progress=False)
    assert len(records) == 1 and set(records[0]) == {"image", "pseudo_label", "confidence", "foreground_fraction"}
    assert 0.3 < records[0]["foreground_fraction"] < 0.7  # about half the voxels are above the mean
    written = nib.load(records[0]["pseudo_label"])
    assert written.shape == image.shape
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    z = (image - image.mean()) / image.std()
    assert np.array_equal(np.asarray(written.dataobj), (z > 0).astype(np.uint8))
    # cached: the same fingerprint reuses the file, another one writes afresh
    mtime = Path(records[0]["pseudo_label"]).stat().st_mtime_ns
    again = write_pseudo_labels(_Threshold(), [poisoned], transform, SlidingWindowInferer((16, 16, 8)),
                                tmp_path / "pl", fingerprint="a", progress=False)
    assert again == records and Path(records[0]["pseudo_label"]).stat().st_mtime_ns == mtime
    manifest = json.loads((tmp_path / "pl" / "manifest.json").read_text())
    assert manifest["fingerprint"] == "a" and manifest["cases"] == records


def test_an_empty_pseudo_label_is_named_in_a_warning(tmp_path):
    image = np.random.default_rng(1).normal(size=(12, 10, 6)).astype(np.float32)
    path = _write_volume(tmp_path / "in" / "case_empty.nii.gz", image)

    def background_only(image: torch.Tensor) -> torch.Tensor:  # a teacher that lost the structure
        return torch.stack([torch.ones(image.shape[2:]), torch.zeros(image.shape[2:])])

    with pytest.warns(UserWarning, match=r"1 of 1 pseudo-labels .* are empty \(case_empty.nii.gz\)"):
        records = write_predicted_labels(background_only, [{"image": path}], data.volume_transforms("infer"),
                                         tmp_path / "pl", fingerprint="empty", progress=False)
    assert records[0]["foreground_fraction"] == 0.0
    assert not np.asarray(nib.load(records[0]["pseudo_label"]).dataobj).any()


def test_label_files_written_elsewhere_get_the_same_warning(tmp_path):
    # nnU-Net's predictor writes the nnU-Net backend's pseudo-labels: the check reads the files
    full = np.zeros((8, 8, 4), np.uint8)
    full[2:5, 2:5, 1:3] = 1
    labels = {"a/case_full.nii.gz": _write_volume(tmp_path / "full.nii.gz", full),
              "a/case_void.nii.gz": _write_volume(tmp_path / "void.nii.gz", np.zeros_like(full))}
    with pytest.warns(UserWarning, match=r"1 of 2 pseudo-labels in round0 are empty \(case_void.nii.gz\)"):
        assert warn_if_empty_label_files(labels, "round0") == ["a/case_void.nii.gz"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_empty_label_files({"a/case_full.nii.gz": labels["a/case_full.nii.gz"]}, "round0") == []


def test_confidence_and_sfr_plus_routing():
    sure = torch.zeros(2, 4, 4, 4)
    sure[1] = 1.0
    assert mean_max_probability(sure) == 1.0
    assert mean_max_probability(torch.full((2, 4, 4, 4), 0.5)) == 0.5
    records = [{"image": "a", "confidence": 0.99}, {"image": "b", "confidence": 0.985}, {"image": "c", "confidence": 0.9}]
    confident, uncertain = route_by_confidence(records, 0.985)
    assert [r["image"] for r in confident] == ["a", "b"] and [r["image"] for r in uncertain] == ["c"]
    assert route_by_confidence(records, 0.0)[1] == [] and route_by_confidence(records, 1.0)[0] == []
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        route_by_confidence(records, 1.5)


def test_pseudo_labelled_transform_crops_image_and_pseudo_label_together(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(30, 28, 20)).astype(np.float32)
    image_path = _write_volume(tmp_path / "img.nii.gz", image)
    pseudo_path = _write_volume(tmp_path / "img_pseudo.nii.gz", (image > image.mean()).astype(np.uint8))
    transform = data.volume_transforms("pseudo_labelled", patch_size=(16, 16, 8))
    for seed in range(3):
        transform.set_random_state(seed)
        never_read = str(tmp_path / "no_such_label.nii.gz")
        item = transform({"image": image_path, "pseudo_label": pseudo_path, "label": never_read})
        assert item["label"] == never_read  # passed through as a string, never loaded
        assert item["pseudo_label"].shape == item["image"].shape == (1, 16, 16, 8)
        # the same crop and flips: above the mean <=> positive after z-scoring
        assert torch.equal(item["pseudo_label"] > 0.5, item["image"] > 0)
    mismatched = _write_volume(tmp_path / "small_pseudo.nii.gz", np.zeros((10, 10, 10), np.uint8))
    with pytest.raises(RuntimeError) as failure:  # MONAI's Compose wraps the check's ValueError
        transform({"image": image_path, "pseudo_label": mismatched})
    assert "spatial size mismatch" in str(failure.value.__cause__)


def test_pseudo_label_term_and_self_training_trainer():
    loss = dice_ce_loss()
    term = PseudoLabelSupervision(loss, weight=lambda t: 0.5 * t)
    engine = type("E", (), {"state": type("S", (), {"iteration": 4})()})()
    logits = torch.randn(2, 2, 8, 8, 8)
    target = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    out = term(engine, {"image": torch.zeros(1), "pseudo_label": target}, logits)
    assert out["pseudo_label_weight"] == 2.0 and torch.isclose(out["pseudo_label"], loss(logits, target))
    with pytest.raises(KeyError, match="pseudo_labelled"):
        term(engine, {"image": torch.zeros(1)}, logits)
    with pytest.raises(ValueError, match="own key"):
        PseudoLabelSupervision(loss, key="label")

    network = VNet(n_filters=4)
    batch = [{"image": torch.randn(1, 16, 16, 16), "label": torch.zeros(1, 16, 16, 16)}] * 2
    unlabelled = [{"image": torch.randn(1, 16, 16, 16), "pseudo_label": torch.ones(1, 16, 16, 16)}] * 2
    loader = torch.utils.data.DataLoader(batch, batch_size=2)
    trainer = build_consistency_trainer(
        "self_training", "cpu", 1, loader, network, torch.optim.SGD(network.parameters(), lr=0.01), loss,
        unlabeled_data_loader=torch.utils.data.DataLoader(unlabelled, batch_size=2), teacher=None,
        consistency_weight=0.1, auxiliary_terms=[PseudoLabelSupervision(loss)], epoch_length=2,
    )
    assert isinstance(trainer, SelfTrainingTrainer) and trainer.teacher is None
    outputs = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(outputs) == 2 and all({"supervised", "pseudo_label", "pseudo_label_weight"} <= set(o) for o in outputs)
    with pytest.raises(ValueError, match="at least one auxiliary term"):
        SelfTrainingTrainer("cpu", 1, loader, network, torch.optim.SGD(network.parameters(), lr=0.01), loss,
                            unlabeled_data_loader=loader)


def test_pseudo_label_quality_tool_scores_against_held_back_labels(tmp_path):
    from tool_loading import load_tool  # same directory, on sys.path under pytest

    pseudo_label_quality = load_tool("pseudo_label_quality")
    label = np.zeros((12, 12, 6), np.uint8)
    label[3:9, 3:9, 1:5] = 1
    image = _write_volume(tmp_path / "imagesTr" / "a.nii.gz", np.random.default_rng(0).normal(size=label.shape).astype(np.float32))
    truth = _write_volume(tmp_path / "labelsTr" / "a.nii.gz", label)
    data.write_msd_description(tmp_path / "dataset.json", [{"id": "a", "image": image, "label": truth}], name="toy")
    half = label.copy()
    half[:, :6] = 0  # half of the foreground: Dice 2/3
    pseudo = _write_volume(tmp_path / "pl" / "a_pseudo.nii.gz", half)
    (tmp_path / "pl" / "manifest.json").write_text(json.dumps(
        {"fingerprint": "x", "cases": [{"image": image, "pseudo_label": pseudo, "confidence": 0.9}]}))
    rows = pseudo_label_quality.score(tmp_path / "pl", tmp_path)
    assert len(rows) == 1 and rows[0]["dice"] == pytest.approx(2 / 3) and rows[0]["confidence"] == 0.9


def _stages_with_fake_rounds(monkeypatch, root: Path, cases: list[dict], rounds: int, **kwargs):
    """SFRStages whose fine-tuning and pseudo-labelling are replaced: every round predicts ``cases``
    (``confidence`` and optional ``foreground_fraction`` per unlabelled case ``u<i>``). Returns the
    stages and the list of each round's fine-tuning set, filled as the rounds run."""
    from scripts.sfr import SFRStages  # the sfr_la scripts (the module's autouse fixture)

    stages = SFRStages(lambda: None, [{"image": "l.nii.gz", "label": "l_seg.nii.gz"}],
                       [{"image": f"u{i}.nii.gz"} for i in range(len(cases))], root, (16, 16, 8), None,
                       rounds=rounds, **kwargs)
    tuned_on: list[list[str]] = []

    def finetune(round_dir: Path, training_set):
        tuned_on.append([e["image"] for e in training_set])
        round_dir.mkdir(parents=True)
        return round_dir / "finetune" / "sam_tuned.pt"

    monkeypatch.setattr(stages, "finetune", finetune)
    monkeypatch.setattr(stages, "pseudo_label", lambda round_dir, tuned: [
        {"image": f"u{i}.nii.gz", "pseudo_label": f"{round_dir.name}_u{i}.nii.gz", **case}
        for i, case in enumerate(cases)])
    monkeypatch.setattr(stages, "load_tuned", lambda tuned: tuned)
    return stages, tuned_on


def test_sfr_plus_stops_when_no_case_is_routed_back(tmp_path, monkeypatch):
    """No pseudo-label reaches tau: the next round would repeat this one's fine-tuning, so it does not run."""
    def run_with_confidences(confidences: list[float], root: Path):
        return _stages_with_fake_rounds(monkeypatch, root, [{"confidence": c} for c in confidences], rounds=3)

    stages, tuned_on = run_with_confidences([0.9, 0.95], tmp_path / "none")
    entries = stages.run()
    assert tuned_on == [["l.nii.gz"]], "a second round on the same volumes would repeat the first"
    assert [e["pseudo_label"] for e in entries] == ["round0_u0.nii.gz", "round0_u1.nii.gz"]
    assert stages.final_model() == tmp_path / "none" / "round0" / "finetune" / "sam_tuned.pt"

    stages, tuned_on = run_with_confidences([0.99, 0.95], tmp_path / "one")
    entries = stages.run()
    assert tuned_on == [["l.nii.gz"], ["l.nii.gz", "u0.nii.gz"], ["l.nii.gz", "u0.nii.gz"]]
    assert entries[0]["pseudo_label"] == "round2_u0.nii.gz"
    assert stages.final_model() == tmp_path / "one" / "round2" / "finetune" / "sam_tuned.pt"


def test_sfr_plus_warns_when_confidence_comes_from_background(tmp_path, monkeypatch):
    """Eq. 8 on mostly-background volumes makes the near-empty pseudo-labels the confident ones: say so
    where the routing is used (SFR+), never for plain SFR, whose routing feeds nothing."""
    cases = [{"confidence": 0.995, "foreground_fraction": 0.002}, {"confidence": 0.99, "foreground_fraction": 0.006},
             {"confidence": 0.97, "foreground_fraction": 0.05}, {"confidence": 0.96, "foreground_fraction": 0.06}]
    stages, tuned_on = _stages_with_fake_rounds(monkeypatch, tmp_path / "plus", cases, rounds=2)
    with pytest.warns(UserWarning, match=r"the 2 cases that reached .* median 0\.40% foreground against 5\.50%") as caught:
        stages.run()
    assert len([w for w in caught if "foreground against" in str(w.message)]) == 1, "round 1's routing feeds nothing"
    assert tuned_on[1] == ["l.nii.gz", "u0.nii.gz", "u1.nii.gz"], "the warning does not change the routing"
    stages, _ = _stages_with_fake_rounds(monkeypatch, tmp_path / "uncertain", cases, rounds=2, retrain_on="uncertain")
    with pytest.warns(UserWarning, match="foreground against") as caught:
        stages.run()
    assert len([w for w in caught if "foreground against" in str(w.message)]) == 2, "both routings are used"

    quiet = [
        (tmp_path / "sfr", cases, 1),  # plain SFR
        (tmp_path / "comparable", [dict(c, foreground_fraction=0.05) for c in cases], 2),
        (tmp_path / "no_fractions", [{"confidence": c["confidence"]} for c in cases], 2),
    ]
    for root, quiet_cases, rounds in quiet:
        stages, _ = _stages_with_fake_rounds(monkeypatch, root, quiet_cases, rounds=rounds)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stages.run()
    assert warn_if_confidence_tracks_background(cases[:2], []) is False  # nothing to compare with
