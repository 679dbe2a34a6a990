"""SSL-MedSAM2 parts: frame insertion, TFFS averaging and prompts, the two propagators."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_testing import bundle_fixture, use_bundle  # same directory, on sys.path under pytest

import samssl.stages.stage
from samssl.foundation import build_foundation_model
from samssl.foundation.affinity_memory import AffinityMemoryPropagator
from samssl.foundation.base import ImageEmbeddings, SegmenterOutput
from samssl.foundation.propagation import BoxChainPropagator, VideoMemoryPropagator

use_bundle("ssl_medsam2")
from scripts import tffs  # noqa: E402  (the bundle's own scripts package, made importable above)

_bundle_scripts = bundle_fixture("ssl_medsam2")


# ---------------------------------------------------------------------------- insertion
def test_insertion_positions_lie_strictly_between_unlabelled_frames_and_follow_the_seed():
    positions = tffs.insertion_positions(10, 9, torch.Generator().manual_seed(3))
    assert sorted(positions) == list(range(1, 10))  # all 9 gaps, each once
    again = tffs.insertion_positions(10, 4, torch.Generator().manual_seed(3))
    assert again == tffs.insertion_positions(10, 4, torch.Generator().manual_seed(3))
    assert len(tffs.insertion_positions(3, 5, torch.Generator().manual_seed(0))) == 5  # with replacement
    with pytest.raises(ValueError, match="at least 2 slices"):
        tffs.insertion_positions(1, 1)
    with pytest.raises(ValueError, match="repeats"):
        tffs.insertion_positions(5, 0)


def test_inserted_frames_sit_at_the_position_and_come_back_out_exactly():
    unlabelled = torch.arange(7.0).view(7, 1, 1, 1).expand(7, 1, 4, 4)
    labelled = 100 + torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 4)
    combined = tffs.insert_frames(unlabelled, labelled, 2)
    assert combined[:, 0, 0, 0].tolist() == [0, 1, 100, 101, 102, 2, 3, 4, 5, 6]
    assert torch.equal(tffs.remove_inserted(combined, 2, 3), unlabelled)
    with pytest.raises(ValueError, match="share"):
        tffs.insert_frames(unlabelled, labelled[:, :, :2], 2)


class _SpyPropagator:
    """Records what TFFS hands the model; returns a different constant for every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, dict[int, torch.Tensor]]] = []

    def propagate(self, frames, mask_prompts):
        self.calls.append((frames.clone(), dict(mask_prompts)))
        return torch.full((frames.shape[0], *frames.shape[-2:]), 0.1 * len(self.calls))


def _volume(depth: int, value_offset: float = 0.0, size: int = 20) -> torch.Tensor:
    return torch.rand(1, size, size, depth, generator=torch.Generator().manual_seed(depth)) + value_offset


def test_tffs_prompts_only_the_labelled_frames_and_averages_over_r_times_m_runs():
    spy = _SpyPropagator()
    method = tffs.TrainingFreeFewShot(spy, repeats=3, frame_size=16)
    unlabelled = _volume(9)
    support = [(_volume(4, 5.0, size=24), torch.ones(1, 24, 24, 4)), (_volume(6, 7.0), torch.zeros(1, 20, 20, 6))]
    probability = method.probability(unlabelled, support, torch.Generator().manual_seed(0))

    assert len(spy.calls) == 3 * 2  # R x M
    unlabelled_frames = method.frames(unlabelled)
    for frames, prompts in spy.calls:
        inserted = frames.shape[0] - 9
        indices = sorted(prompts)
        position = indices[0]
        assert indices == list(range(position, position + inserted)), "prompts exactly on the inserted block"
        assert 1 <= position <= 8
        # the unlabelled frames reach the model unprompted and unchanged, in order
        assert torch.equal(tffs.remove_inserted(frames, position, inserted), unlabelled_frames)
    # the first support volume's masks are all ones, the second's all zeros: the prompts say so
    assert all(bool(m.all()) for m in spy.calls[0][1].values())
    assert not any(bool(m.any()) for m in spy.calls[3][1].values())
    # the mean of the six constants, resized back to the volume's own slices
    assert probability.shape == (20, 20, 9)
    assert torch.allclose(probability, torch.full_like(probability, 0.1 * sum(range(1, 7)) / 6), atol=1e-6)


def test_tffs_writes_pseudo_labels_without_reading_unlabelled_ground_truth(tmp_path):
    affine = np.diag([1.25, 1.25, 2.0, 1.0])
    for name, depth in (("lab", 6), ("unl", 8)):
        image = np.random.default_rng(depth).random((20, 20, depth)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), str(tmp_path / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((20, 20, 6), np.uint8), affine), str(tmp_path / "lab_gt.nii.gz"))

    class _Half:
        def propagate(self, frames, mask_prompts):
            return torch.full((frames.shape[0], *frames.shape[-2:]), 0.75)

    method = tffs.TrainingFreeFewShot(_Half(), repeats=2, frame_size=16)
    poisoned = {"image": str(tmp_path / "unl.nii.gz"), "label": str(tmp_path / "does_not_exist.nii.gz")}
    records = tffs.write_tffs_pseudo_labels(method, [{"image": str(tmp_path / "lab.nii.gz"),
                                                      "label": str(tmp_path / "lab_gt.nii.gz")}],
                                            [poisoned], tmp_path / "out", fingerprint="f")
    written = nib.load(records[0]["pseudo_label"])
    assert written.shape == (20, 20, 8) and np.allclose(written.affine, affine)
    assert np.asarray(written.dataobj).min() == 1  # 0.75 everywhere -> foreground everywhere
    assert records[0]["confidence"] == pytest.approx(0.75)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["fingerprint"] == "f" and len(manifest["cases"]) == 1


# ---------------------------------------------------------------------------- propagators
@pytest.fixture(scope="module")
def litemedsam():
    return build_foundation_model("litemedsam", cache={"max_bytes": 1 << 28})


def _moving_disc(frames: int = 12, present: range = range(0, 8), size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright disc drifting right over a dark noisy background, absent after ``present``."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    noise = torch.Generator().manual_seed(0)
    for t in range(frames):
        disc = ((yy - 48) ** 2 + (xx - 30 - 3 * t) ** 2 <= 14 ** 2) & (t in present)
        images.append(0.1 * torch.rand(size, size, generator=noise) + 0.8 * disc)
        masks.append(disc)
    return torch.stack(images)[:, None], torch.stack(masks).float()


def test_box_chain_follows_an_object_frame_to_frame_and_stops_where_it_vanishes(litemedsam):
    frames, masks = _moving_disc()
    probabilities = BoxChainPropagator(litemedsam, min_score=0.8).propagate(frames, {0: masks[0]})
    assert probabilities.shape == (12, 96, 96)
    predicted = probabilities > 0.5
    for t in range(1, 8):
        dice = 2 * (predicted[t] & (masks[t] > 0)).sum() / (predicted[t].sum() + masks[t].sum())
        assert dice > 0.8, f"frame {t}: Dice {float(dice):.2f}"
    assert not predicted[8:].any(), "the chain must stop once the disc is gone"
    hits = litemedsam.embedding_cache.hits
    BoxChainPropagator(litemedsam, min_score=0.8).propagate(frames, {0: masks[0]})
    assert litemedsam.embedding_cache.hits > hits, "a second run reuses the cached frame embeddings"


def test_box_chain_runs_both_ways_and_an_empty_prompt_does_not_stop_it(litemedsam):
    frames, masks = _moving_disc()  # the frames of the test above: their embeddings are cached
    empty = torch.zeros_like(masks[0])
    # prompts on 3..5, the last one empty (as a labelled volume's edge slice): frames 0-2 and 6-7 are reached
    probabilities = BoxChainPropagator(litemedsam, min_score=0.8).propagate(frames, {3: masks[3], 4: masks[4], 5: empty})
    predicted = probabilities > 0.5
    assert predicted[[0, 1, 2, 6, 7]].flatten(1).any(1).all()
    assert not predicted[5].any(), "a prompted frame keeps its prompt"
    assert not predicted[9:].any()
    with pytest.raises(ValueError, match="outside"):
        BoxChainPropagator(litemedsam).propagate(frames, {12: masks[0]})
    with pytest.raises(ValueError, match="at least one"):
        BoxChainPropagator(litemedsam).propagate(frames, {})


def test_video_memory_propagator_gives_probabilities_for_every_frame_of_a_combined_stack():
    sam2 = build_foundation_model("sam2.1_hiera_t", random_init=True, image_size=256)
    method = tffs.TrainingFreeFewShot(VideoMemoryPropagator(sam2), repeats=1, frame_size=64)
    unlabelled = torch.rand(1, 40, 40, 5, generator=torch.Generator().manual_seed(0))
    label = torch.zeros(1, 40, 40, 3)
    label[:, 10:30, 10:30] = 1
    probability = method.probability(unlabelled, [(torch.rand(1, 40, 40, 3), label)], torch.Generator().manual_seed(0))
    assert probability.shape == (40, 40, 5)
    assert torch.isfinite(probability).all() and probability.min() >= 0 and probability.max() <= 1
    with pytest.raises(ValueError, match="no video memory"):
        VideoMemoryPropagator(build_foundation_model("litemedsam"))


class _PooledImageSegmenter:
    """A tiny stand-in for LiteMedSAM: the embedding is the image and its negative pooled 4x (so cosine
    affinity tells bright from dark), and a box decodes to the bright pixels inside it."""

    spatial_dims, name = 2, "pooled-image"

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, images: torch.Tensor) -> ImageEmbeddings:
        self.encoded += images.shape[0]
        image = images[:, :1].float()
        features = torch.nn.functional.avg_pool2d(torch.cat([image, 1 - image], 1), 4)
        size = tuple(images.shape[-2:])
        return ImageEmbeddings(features, (size,) * len(images), (size,) * len(images), (image,))

    def decode(self, embeddings: ImageEmbeddings, boxes: torch.Tensor) -> SegmenterOutput:
        image = embeddings.high_res_features[0][:, 0]
        inside = torch.zeros_like(image, dtype=torch.bool)
        for b, (x0, y0, x1, y1) in enumerate(boxes[:, 0].round().long().tolist()):
            inside[b, y0:y1 + 1, x0:x1 + 1] = True
        logits = torch.where(inside & (image > 0.5), 10.0, -10.0)[:, None]
        return SegmenterOutput(logits, torch.ones(len(image), 1), logits)


class _RecordingPrompts(dict):
    """Mask prompts that remember which frames' masks were read."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.read: set[int] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_affinity_memory_follows_an_object_both_ways_and_is_empty_where_it_vanishes():
    frames, masks = _moving_disc(frames=14, present=range(0, 10))
    prompts = _RecordingPrompts({5: masks[5], 6: masks[6]})  # the "labelled" block, as TFFS inserts it
    propagator = AffinityMemoryPropagator(_PooledImageSegmenter(), stride=1, num_conditioning=None)
    refined, coarse = propagator.propagate_steps(frames, prompts)
    assert refined.shape == coarse.shape == (14, 96, 96)
    predicted = refined > 0.5
    for t in [0, 1, 2, 3, 4, 7, 8, 9]:  # backward from frame 5, forward from frame 6
        dice = 2 * (predicted[t] & (masks[t] > 0)).sum() / (predicted[t].sum() + masks[t].sum())
        assert dice > 0.9, f"frame {t}: Dice {float(dice):.2f}"
        assert (coarse[t] > 0.5).any(), f"frame {t}: the coarse read-out found nothing"
    assert not predicted[10:].any() and not (coarse[10:] > 0.5).any(), "the disc is gone from frame 10 on"
    assert prompts.read <= {5, 6}, "only the prompted frames' masks are read"
    assert torch.equal(refined[5], masks[5]) and torch.equal(refined[6], masks[6])
    assert torch.equal(propagator.propagate(frames, prompts), refined)


def test_affinity_memory_options_and_refusals():
    frames, masks = _moving_disc(frames=6, present=range(0, 6))
    fake = _PooledImageSegmenter()
    coarse_only = AffinityMemoryPropagator(fake, refine=False, radius=3, stride=2, num_conditioning=1, window=1)
    probability = coarse_only.propagate(frames, {0: masks[0]})
    assert probability[1:].flatten(1).amax(1).gt(0.5).all(), "radius, pooling and coarse-only output still track"
    with pytest.raises(ValueError, match="at least one"):
        coarse_only.propagate(frames, {})
    with pytest.raises(ValueError, match="temperature"):
        AffinityMemoryPropagator(fake, temperature=0)


def test_propagators_are_selected_by_name_and_auto_picks_the_teachers_own_memory():
    fake = _PooledImageSegmenter()
    assert isinstance(tffs.build_propagator("affinity_memory", fake), AffinityMemoryPropagator)
    assert isinstance(tffs.build_propagator("auto", fake), AffinityMemoryPropagator)
    assert isinstance(tffs.build_propagator("box_chain", fake), BoxChainPropagator)

    class _WithMemory(_PooledImageSegmenter):
        def propagate(self, frames, mask_prompts, direction="both"):
            raise NotImplementedError

    assert isinstance(tffs.build_propagator("auto", _WithMemory()), VideoMemoryPropagator)
    assert tffs.support_frames_for("affinity_memory") == tffs.support_frames_for("auto") == "all"
    assert tffs.support_frames_for("box_chain") == "depth_matched"
    with pytest.raises(ValueError, match="affinity_memory"):
        tffs.build_propagator("nearest", fake)


# ---------------------------------------------------------------------------- FSL re-training
from scripts.planned_unet import FoldEnsemble, plan_dynunet  # noqa: E402  (the bundle's own network plan)

fsl = __import__("scripts.fsl", fromlist=["fsl"])


def test_planning_follows_nnunet_rules_for_isotropic_and_anisotropic_spacing():
    iso = plan_dynunet((64, 64, 48), (1.25, 1.25, 1.25))
    assert iso.strides[0] == (1, 1, 1) and iso.strides[-1] == (2, 2, 1)  # 48 stops at 6 voxels, 64 goes on
    assert all(k == (3, 3, 3) for k in iso.kernel_size)
    aniso = plan_dynunet((160, 160, 32), (0.7, 0.7, 3.0))
    assert aniso.strides[1] == (2, 2, 1) and aniso.kernel_size[0] == (3, 3, 1), "thick slices: pool in-plane first"
    assert (3, 3, 3) in aniso.kernel_size[2:], "once the spacing evens out, 3D kernels"
    network = iso.build(filters=[4, 8, 16, 32, 64])
    assert network(torch.zeros(1, 1, 64, 64, 48)).shape == (1, 2, 64, 64, 48)
    with pytest.raises(ValueError, match="cannot be halved"):
        plan_dynunet((60, 64, 48), (1.0, 1.0, 1.0))


class _Constant(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x):
        return self.logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:])


def test_fold_ensemble_averages_the_folds_probabilities():
    ensemble = FoldEnsemble([_Constant([0.0, 2.0]), _Constant([1.0, -1.0])])
    out = ensemble(torch.zeros(1, 1, 2, 2, 2))
    expected = (torch.softmax(torch.tensor([0.0, 2.0]), 0) + torch.softmax(torch.tensor([1.0, -1.0]), 0)) / 2
    assert torch.allclose(out.exp()[0, :, 0, 0, 0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        FoldEnsemble([])


def _synthetic_cases(folder, count, prefix):
    """Small volumes with a bright cube and its label; NIfTI with a 2 mm affine."""
    cases = []
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for i in range(count):
        rng = np.random.default_rng(i + 100 * len(prefix))
        label = np.zeros((24, 24, 16), np.uint8)
        label[6 + i % 4:16 + i % 4, 5:15, 4:12] = 1
        image = (rng.normal(0, 0.3, label.shape) + 2.0 * label).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), str(folder / f"{prefix}{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(folder / f"{prefix}{i}_gt.nii.gz"))
        cases.append({"image": str(folder / f"{prefix}{i}.nii.gz"), "label": str(folder / f"{prefix}{i}_gt.nii.gz")})
    return cases


def test_fsl_holds_each_unlabelled_case_out_once_per_round_and_resumes(tmp_path, monkeypatch):
    labelled = _synthetic_cases(tmp_path, 2, "lab")
    unlabelled = _synthetic_cases(tmp_path, 4, "unl")
    # initial pseudo-labels: the true masks stand in for TFFS output; the 'label' key is dropped
    pseudo = [{"image": c["image"], "pseudo_label": c["label"]} for c in unlabelled]
    plan = plan_dynunet((16, 16, 16), (2.0, 2.0, 2.0))
    retraining = fsl.FoldRetraining(lambda: plan.build(filters=[4, 8, 16]), labelled, pseudo, tmp_path / "fsl",
                                    patch_size=(16, 16, 16), target_spacing=None, num_folds=2, rounds=2,
                                    training={"num_iterations": 2, "batch_size": 2, "checkpoint_interval": 1},
                                    guards=False)  # Algorithm 1's folds as the paper runs them; guards: below
    trained: list[tuple[str, list[str]]] = []
    real_train = retraining.train_fold

    def spy(training_set, fold_dir):
        if not (fold_dir / "model.pt").exists():  # a call that will train
            trained.append((f"{fold_dir.parent.name}/{fold_dir.name}", [e["label"] for e in training_set]))
        return real_train(training_set, fold_dir)

    monkeypatch.setattr(retraining, "train_fold", spy)
    models = retraining.run()
    assert [name for name, _ in trained] == ["round0/fold0", "round0/fold1", "round1/fold0", "round1/fold1"]
    assert len(models) == 2 and all(m.exists() for m in models)
    round0 = [case for k in (0, 1) for case in json.loads(
        (tmp_path / "fsl" / "round0" / f"fold{k}" / "held_out_pseudo_labels" / "manifest.json").read_text())["cases"]]
    assert sorted(r["image"] for r in round0) == sorted(c["image"] for c in unlabelled), "each case re-predicted once"
    # round 1 trains on round 0's re-predictions, never on the initial pseudo-labels; labelled cases keep their labels
    round0_files = {r["pseudo_label"] for r in round0}
    for name, labels in trained[2:]:
        assert set(labels[:2]) == {c["label"] for c in labelled}
        assert set(labels[2:]) <= round0_files and len(labels[2:]) == 2
    for name, labels in trained[:2]:  # a held-out fold's cases are not in its own training set
        assert len(labels) == 4
    ensemble = retraining.ensemble(models)
    assert ensemble(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)

    trained.clear()
    assert retraining.run() == models and trained == [], "a finished run trains nothing again"
    with pytest.raises(ValueError, match="pseudo_label"):
        fsl.FoldRetraining(lambda: None, labelled, [{"image": "x"}, {"image": "y"}], tmp_path, (16, 16, 16), None,
                           num_folds=2)


def test_fold_training_follows_the_bundles_precision_and_a_mixed_precision_enters_the_fingerprint(tmp_path, monkeypatch):
    from samssl.engines import patch_training

    labelled = _synthetic_cases(tmp_path, 2, "lab")
    pseudo = [{"image": c["image"], "pseudo_label": c["label"]} for c in _synthetic_cases(tmp_path, 4, "unl")]
    plan = plan_dynunet((16, 16, 16), (2.0, 2.0, 2.0))
    precisions: list[object] = []
    real = patch_training.train_on_volume_patches

    def spy(*args, **kwargs):
        precisions.append(kwargs.get("amp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(fsl, "train_on_volume_patches", spy)

    def stage_inputs(amp):
        retraining = fsl.FoldRetraining(lambda: plan.build(filters=[4, 8, 16]), labelled, pseudo, tmp_path / f"fsl_{amp}",
                                        (16, 16, 16), None, {"num_iterations": 1, "batch_size": 2}, num_folds=2,
                                        rounds=1, amp=amp)
        unlabelled = [{"id": e["image"], "image": e["image"]} for e in pseudo]
        fold = {"train": unlabelled[:2], "val": unlabelled[2:]}
        stage = retraining.fold_stage(0, 0, fold, {e["image"]: e["pseudo_label"] for e in pseudo})
        return retraining, stage.inputs()

    retraining, fp32_inputs = stage_inputs(False)
    assert "precision" not in fp32_inputs, "a float32 fold keeps the fingerprint it had before the switch"
    bf16, bf16_inputs = stage_inputs("bf16")
    assert bf16_inputs["precision"] == "bf16"
    bf16.train_fold([*labelled, {"image": pseudo[0]["image"], "label": pseudo[0]["pseudo_label"]}], tmp_path / "fold")
    assert precisions == ["bf16"], "the fold trains under the bundle's amp"


def test_suponly_deploys_one_network_trained_on_the_labelled_cases_alone(tmp_path):
    pipeline = __import__("scripts.pipeline", fromlist=["pipeline"])
    labelled = _synthetic_cases(tmp_path, 2, "lab")
    plan = plan_dynunet((16, 16, 16), (2.0, 2.0, 2.0))
    run = pipeline.SSLMedSAM2({"labelled": labelled, "unlabelled": [{"image": "never_read.nii.gz"}]}, tmp_path / "run",
                              tmp_path / "model.pt", lambda: plan.build(filters=[4, 8, 16]), None, "",
                              (16, 16, 16), None, method="suponly", training={"num_iterations": 2, "batch_size": 2})
    assert run.run().exists() and len(run.deployed.models) == 1
    assert not (tmp_path / "run" / "tffs").exists() and not (tmp_path / "run" / "fsl").exists()
    assert pipeline.ensemble_size("ssl_medsam2", 5) == 5
    with pytest.raises(ValueError, match="method"):
        pipeline.ensemble_size("mean_teacher", 5)
    with pytest.raises(ValueError, match="TFFS"):
        pipeline.SSLMedSAM2({"labelled": labelled}, tmp_path, tmp_path / "m.pt", lambda: None, None, "", (16,) * 3, None)


def test_two_processes_share_the_folds_and_both_end_with_every_fold(tmp_path, monkeypatch):
    """``multi_gpu_train.json``: process r trains folds k % 2 == r, waits for the other's files, then goes on."""
    import threading

    monkeypatch.setattr(samssl.stages.stage.time, "sleep", lambda _: None)  # poll without waiting
    labelled = _synthetic_cases(tmp_path, 1, "lab")
    pseudo = [{"image": c["image"], "pseudo_label": c["label"]} for c in _synthetic_cases(tmp_path, 4, "unl")]
    plan = plan_dynunet((16, 16, 16), (2.0, 2.0, 2.0))
    trained: dict[int, list[str]] = {0: [], 1: []}
    results: dict[int, list] = {}

    def process(rank: int) -> None:
        retraining = fsl.FoldRetraining(lambda: plan.build(filters=[4, 8, 16]), labelled, pseudo, tmp_path / "fsl",
                                        (16, 16, 16), None, {"num_iterations": 1, "batch_size": 2}, num_folds=2,
                                        rounds=2, rank=rank, world_size=2)
        real = retraining.train_fold
        retraining.train_fold = lambda s, d: trained[rank].append(f"{d.parent.name}/{d.name}") or real(s, d)
        results[rank] = retraining.run()

    threads = [threading.Thread(target=process, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert trained == {0: ["round0/fold0", "round1/fold0"], 1: ["round0/fold1", "round1/fold1"]}
    assert results[0] == results[1] and len(results[0]) == 2 and all(p.exists() for p in results[0])
    with pytest.raises(ValueError, match="rank"):
        fsl.FoldRetraining(lambda: None, labelled, pseudo, tmp_path, (16, 16, 16), None, num_folds=2, rank=2,
                           world_size=2)


# ---------------------------------------------------------------------------- FSL guards (not in the paper)
fsl_guards = __import__("scripts.fsl_guards", fromlist=["fsl_guards"])


def test_labelled_share_holds_in_every_batch_and_over_runs_of_batches():
    from samssl.data.samplers import LabelledShareBatchSampler, labelled_per_batch

    sampler = LabelledShareBatchSampler(4, 48, 2, 0.5, torch.Generator().manual_seed(0))
    for _ in range(3):  # several passes
        batches = list(sampler)
        assert len(batches) == 24 and all(len(b) == 2 for b in batches)
        assert all(sum(i < 4 for i in b) >= 1 for b in batches), "one labelled patch in every batch of 2"
        assert {i for b in batches for i in b} - set(range(4)), "pseudo-labelled items are drawn too"
    again = LabelledShareBatchSampler(4, 48, 2, 0.5, torch.Generator().manual_seed(0))
    assert list(again) == list(LabelledShareBatchSampler(4, 48, 2, 0.5, torch.Generator().manual_seed(0)))
    # a share that is not a whole number of a batch holds over every run of batches from the pass's start
    assert [labelled_per_batch(b, 1, 0.5) for b in range(4)] == [1, 0, 1, 0]
    sampler = LabelledShareBatchSampler(3, 40, 4, 0.3, torch.Generator().manual_seed(1))
    seen = labelled = 0
    for batch in sampler:
        seen += len(batch)
        labelled += sum(i < 3 for i in batch)
        assert labelled >= 0.3 * seen - 1e-9
    with pytest.raises(ValueError, match="share"):
        LabelledShareBatchSampler(1, 4, 2, 0.0)


def test_patch_training_mixes_batches_only_when_pseudo_labelled_volumes_are_present(tmp_path, monkeypatch):
    """SupOnly (labelled volumes only) keeps the plain shuffled loader, bit for bit."""
    from samssl.data.samplers import LabelledShareBatchSampler
    from samssl.engines import patch_training

    loaders = []

    class _NoTraining:
        def __init__(self, train_data_loader, **_):
            loaders.append(train_data_loader)

        def run(self):
            pass

    monkeypatch.setattr(patch_training, "SemiSupervisedTrainer", _NoTraining)
    cases = _synthetic_cases(tmp_path, 4, "c")
    net = torch.nn.Conv3d(1, 2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    args = (net, optimizer, lambda *a: None, cases, (8, 8, 8), None, 4, 2, tmp_path / "ckpt", 2)
    patch_training.train_on_volume_patches(*args)
    patch_training.train_on_volume_patches(*args, num_labelled=4, labelled_share=0.5)  # nothing pseudo-labelled
    patch_training.train_on_volume_patches(*args, num_labelled=1, labelled_share=0.0)  # share off
    patch_training.train_on_volume_patches(*args, num_labelled=1, labelled_share=0.5)
    assert [isinstance(loader.batch_sampler, LabelledShareBatchSampler) for loader in loaders] == [False] * 3 + [True]
    assert all(0 in batch for batch in loaders[-1].batch_sampler), "the one labelled volume is in every batch"
    assert loaders[-1].generator is loaders[-1].batch_sampler.generator, "a resumed run restores the sampler's draws"


def _mask_file(path, offset=0, size=(10, 10, 8), shape=(24, 24, 16)):
    """A cube label (2 mm voxels, so 8 mm^3 each) shifted by ``offset`` along the first axis; size 0: empty,
    size None: every voxel."""
    label = np.zeros(shape, np.uint8) if size is not None else np.ones(shape, np.uint8)
    if size:
        label[6 + offset:6 + offset + size[0], 5:5 + size[1], 4:4 + size[2]] = 1
    nib.save(nib.Nifti1Image(label, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def _mocked_retraining(tmp_path, monkeypatch, pseudo, offsets, rounds, guards=None):
    """FoldRetraining with training and re-prediction mocked: fold training writes a stub model,
    re-prediction of round ``r`` writes each held-out case's cube shifted by ``offsets[r]``."""
    labelled = _synthetic_cases(tmp_path, 2, "lab")  # 10 x 10 x 8 cubes: 6400 mm^3 each
    trained: dict[str, list[str]] = {}

    def fake_write(network, entries, transform, inferer, out_dir, fingerprint, device="cpu"):
        r = int(Path(out_dir).parent.parent.name.removeprefix("round"))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return [{"image": e["image"], "pseudo_label": _mask_file(Path(out_dir) / Path(e["image"]).name, offsets[r])}
                for e in entries]

    monkeypatch.setattr(fsl, "write_pseudo_labels", fake_write)
    retraining = fsl.FoldRetraining(lambda: None, labelled, pseudo, tmp_path / "fsl", (16, 16, 16), None, num_folds=2,
                                    rounds=rounds, guards=guards)

    def fake_train(training_set, fold_dir):
        trained[f"{fold_dir.parent.name}/{fold_dir.name}"] = [e["label"] for e in training_set]
        fold_dir.mkdir(parents=True, exist_ok=True)
        (fold_dir / "model.pt").write_bytes(fold_dir.name.encode())
        return fold_dir / "model.pt"

    monkeypatch.setattr(retraining, "train_fold", fake_train)
    monkeypatch.setattr(retraining, "load", lambda model_file: None)
    return retraining, trained


def test_empty_and_implausibly_large_pseudo_labels_are_left_out_warned_and_recorded(tmp_path, monkeypatch):
    images = [str(c["image"]) for c in _synthetic_cases(tmp_path, 4, "unl")]
    files = [_mask_file(tmp_path / "empty.nii.gz", size=0),  # empty
             _mask_file(tmp_path / "huge.nii.gz", size=None),  # 73728 mm^3 > 4 x 6400
             _mask_file(tmp_path / "fine0.nii.gz"), _mask_file(tmp_path / "fine1.nii.gz", offset=2)]
    pseudo = [{"image": i, "pseudo_label": f} for i, f in zip(images, files)]
    retraining, trained = _mocked_retraining(tmp_path, monkeypatch, pseudo, offsets=[0], rounds=1)
    with pytest.warns(UserWarning, match=r"2 of 4 pseudo-labels left out.*unl0\.nii\.gz \(empty.*unl1\.nii\.gz \(above"):
        retraining.run()
    used = {label for labels in trained.values() for label in labels}
    assert files[0] not in used and files[1] not in used, "implausible pseudo-labels never reach training"
    assert {files[2], files[3]} <= used
    record = json.loads((tmp_path / "fsl" / "round0" / "round.json").read_text())
    assert record["plausible_volume_mm3"] == [1600.0, 25600.0]  # a quarter of the smallest, 4 x the largest label
    assert [(e["image"], e["volume_mm3"], e["range_mm3"]) for e in record["excluded_pseudo_labels"]] == [
        (images[0], 0.0, [1600.0, 25600.0]), (images[1], 73728.0, [1600.0, 25600.0])]
    # each fold's manifest names the pseudo-labels its training set left out (its fingerprint covers them)
    recorded = [e["image"] for k in (0, 1) for e in json.loads(
        (tmp_path / "fsl" / "round0" / f"fold{k}" / "stage.json").read_text())["inputs"].get("excluded_pseudo_labels", [])]
    assert sorted(recorded) == images[:2]
    # the plain Algorithm 1 (guards off) trains on every pseudo-label
    (tmp_path / "plain").mkdir()
    plain, trained_plain = _mocked_retraining(tmp_path / "plain", monkeypatch, pseudo, offsets=[0], rounds=1,
                                              guards=False)
    plain.run()
    assert set(files) <= {label for labels in trained_plain.values() for label in labels}


def test_stopping_rule_deploys_the_round_before_a_drop_in_agreement():
    decide = fsl_guards.agreement_decision
    assert decide([0.6]) == (False, 0)
    assert decide([0.6, 0.8]) == (False, 1)
    assert decide([0.6, 0.8, 0.7]) == (True, 1), "round 2 drifted: deploy round 1's folds"
    assert decide([0.6, 0.5]) == (True, 0)
    assert decide([0.6, 0.59], tolerance=0.02) == (False, 1)
    assert decide([None, 0.5]) == (False, 1) and decide([0.5, None]) == (False, 1), "no agreement: no evidence"
    with pytest.raises(ValueError):
        decide([])
    # the switches: False is the plain Algorithm 1, each guard can be set alone, string booleans are refused
    plain = fsl_guards.FSLGuards.resolve(False)
    assert plain.share == 0.0 and not plain.filtering and not plain.stopping
    assert fsl_guards.FSLGuards.resolve({"labelled_share": 0.25}).share == 0.25 and fsl_guards.FSLGuards.resolve(None).stopping
    for wrong in ("false", {"enabled": "false"}, {"labeled_share": 0.5}, {"labelled_share": 1.5}):
        with pytest.raises(ValueError):
            fsl_guards.FSLGuards.resolve(wrong)


def test_fsl_rounds_stop_when_agreement_drops_and_deploy_the_previous_round(tmp_path, monkeypatch):
    images = [str(c["image"]) for c in _synthetic_cases(tmp_path, 4, "unl")]
    pseudo = [{"image": i, "pseudo_label": _mask_file(tmp_path / f"p{n}.nii.gz")} for n, i in enumerate(images)]
    # round 0 re-predicts the cubes shifted by 1 voxel (Dice 0.9 with its inputs), round 1 shifts them 3 more
    # (Dice 0.7 with round 0's): agreement drops, so round 2 never runs and round 0's folds are deployed
    retraining, trained = _mocked_retraining(tmp_path, monkeypatch, pseudo, offsets=[1, 4, 4], rounds=3)
    with pytest.warns(UserWarning, match="stopped after round 1"):
        models = retraining.run()
    assert sorted(trained) == ["round0/fold0", "round0/fold1", "round1/fold0", "round1/fold1"]
    assert models == [tmp_path / "fsl" / "round0" / f"fold{k}" / "model.pt" for k in (0, 1)]
    assert retraining.deployed_round == 0 and retraining.agreements == pytest.approx([0.9, 0.7])
    record = json.loads((tmp_path / "fsl" / "round1" / "round.json").read_text())
    assert record["stopped_here"] and record["deploy_round"] == 0
    assert record["agreement_per_round"] == pytest.approx([0.9, 0.7])
    # agreement rising (1 voxel, then none): every round runs and the last one is deployed
    (tmp_path / "up").mkdir()
    rising, trained = _mocked_retraining(tmp_path / "up", monkeypatch, pseudo, offsets=[1, 1, 1], rounds=3)
    assert rising.run()[0].parent.parent.name == "round2" and rising.agreements == pytest.approx([0.9, 1.0, 1.0])
    # the plain Algorithm 1 runs every round whatever the agreement
    (tmp_path / "plain").mkdir()
    plain, trained = _mocked_retraining(tmp_path / "plain", monkeypatch, pseudo, offsets=[1, 4, 4], rounds=3,
                                        guards={"enabled": False})
    assert plain.run()[0].parent.parent.name == "round2" and len(trained) == 6
