"""SemiSAM's components: ramps, patch-to-volume geometry, uncertainty masking, label-free SAM branch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from bundle_testing import bundle_fixture  # same directory, on sys.path under pytest
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

import samssl.data as data
from samssl.data.transforms_3d import VolumeLookup
from samssl.engines import MeanTeacherTrainer, UncertaintyAwareMeanTeacherTrainer, build_consistency_trainer
from samssl.foundation import EmbeddingCache, build_foundation_model, prompts_from_probability
from samssl.foundation.slicewise import PatchSliceMap, patch_to_volume_map, volume_to_slices
from samssl.losses import ExponentialRampDown, ExponentialRampUp, SAMAssistedConsistency, dice_ce_loss, sam_weight_ramp
from samssl.metrics import VOLUME_METRICS, case_metrics
from samssl.networks import EMATeacher, VNet

ROOT = Path(__file__).resolve().parents[1]
TRAIN_JSON = ROOT / "bundles" / "semisam_la" / "configs" / "train.json"
_bundle_scripts = bundle_fixture("semisam_la")  # train.json imports the bundle's scripts
SPACING = 2.5  # coarse LA grid: small volumes, quick tests
PATCH = (32, 32, 16)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def la_cases(la_root):
    return sorted(data.msd_datalist(la_root), key=lambda e: e["id"])[:3]


@pytest.fixture(scope="module")
def litemedsam(tmp_path_factory):
    teacher = build_foundation_model("litemedsam")
    teacher.embedding_cache = EmbeddingCache(directory=tmp_path_factory.mktemp("sam_cache"))
    return teacher


def _unlabelled_patches(cases, seed: int, count: int = 2) -> list[dict]:
    """Real unlabelled LA patches (random crop, flips, rotation) that remember where they lie."""
    transform = data.volume_transforms("unlabelled", PATCH, SPACING, patch_location=True)
    transform.set_random_state(seed)
    entries = [{"image": c["image"], "id": c["id"]} for c in cases]
    return [transform(entries[i % len(entries)]) for i in range(count)]


def _batch(items: list[dict]) -> dict:
    return {
        "image": torch.stack([i["image"].as_tensor() for i in items]),
        "patch_affine": torch.stack([i["patch_affine"] for i in items]),
        "case_key": torch.stack([i["case_key"] for i in items]),
    }


class _Engine:
    """The part of a trainer the SAM branch uses: the iteration and the teacher's uncertainty."""

    def __init__(self, uncertainty: torch.Tensor | None = None, iteration: int = 1) -> None:
        self.state = type("State", (), {"iteration": iteration})()
        self._uncertainty = uncertainty
        self.uncertainty_calls = 0

    def teacher_uncertainty(self, engine, unlabelled, passes, stochastic=True):
        self.uncertainty_calls += 1
        return self._uncertainty * math.log(2)


class _RecordingBatch(dict):
    """A batch that records every key read from it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


# ---------------------------------------------------------------- ramps
def test_ramps_are_the_papers_formulas():
    t_max = 6000
    lambda_c, lambda_s = ExponentialRampUp(0.1, t_max), ExponentialRampDown(0.1, t_max)
    for t in (0, 1, 1500, 3000, 4321, 6000, 7000):
        progress = min(t, t_max) / t_max
        assert lambda_c(t) == pytest.approx(0.1 * math.exp(-5 * (1 - progress)))
        assert lambda_s(t) == pytest.approx(0.1 * math.exp(-5 * progress))
    # the bundle builds exactly these from its own settings
    parser = ConfigParser()
    parser.read_config(str(TRAIN_JSON))
    assert parser["num_iterations"] == 6000
    weight_c, weight_s = parser.get_parsed_content("consistency_weight"), parser.get_parsed_content("sam_weight")
    assert weight_c(3000) == pytest.approx(0.1 * math.exp(-2.5)) and weight_s(3000) == pytest.approx(0.1 * math.exp(-2.5))
    assert weight_c(6000) == pytest.approx(0.1) and weight_s(0) == pytest.approx(0.1)


def test_the_reliability_gated_variant_ramps_the_sam_weight_up_and_floors_the_prompts():
    parser = ConfigParser()
    parser.read_config([str(TRAIN_JSON), str(TRAIN_JSON.parent / "baselines" / "mean_teacher_semisam_reliable.json")])
    weight_s = parser.get_parsed_content("sam_weight")
    assert isinstance(weight_s, ExponentialRampUp)
    assert weight_s(0) == pytest.approx(0.1 * math.exp(-5)) and weight_s(6000) == pytest.approx(0.1)
    assert parser["sam#min_certain_fraction"] == 0.5 and parser["sam#enabled"]
    with pytest.raises(ValueError, match="unknown SAM weight schedule 'ramp_sideways'.*ramp_down"):
        sam_weight_ramp("ramp_sideways", 0.1, 100)


# ---------------------------------------------------------------- geometry
def test_patch_slices_map_exactly_onto_whole_volume_slices(la_cases):
    volumes = VolumeLookup(la_cases, data.volume_transforms("infer", target_spacing=SPACING))
    for item in _unlabelled_patches(la_cases, seed=3, count=6):
        volume = volumes.volume(int(item["case_key"]))
        mapping = patch_to_volume_map(item["patch_affine"], volume.affine)
        patch = item["image"][0].as_tensor()
        for index in (0, PATCH[2] // 2, PATCH[2] - 1):
            where = PatchSliceMap(mapping, PATCH, tuple(volume.shape[1:]), axis=-1, index=index)
            if not where.slice_inside:
                continue
            whole = volume_to_slices(volume.as_tensor(), axis=where.volume_axis)[where.volume_index, 0]
            gathered = where.from_slice(whole, fill=float("nan"))
            inside = where.inside
            assert inside.any()
            torch.testing.assert_close(gathered[inside], patch[..., index][inside])
            canvas = where.to_slice(patch[..., index], fill=float("nan"))
            known = ~torch.isnan(canvas)
            torch.testing.assert_close(canvas[known], whole[known])


def test_a_resampled_patch_is_refused():
    affine = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="axis-aligned"):
        patch_to_volume_map(torch.diag(torch.tensor([0.5, 1.0, 1.0, 1.0], dtype=torch.float64)), affine)


# ---------------------------------------------------------------- uncertainty masking
def test_prompts_and_slices_exclude_uncertain_voxels():
    probability = torch.zeros(1, 1, 32, 32, 8)
    uncertainty = torch.full_like(probability, 0.05)
    probability[..., 4:12, 4:12, :] = 0.95  # certain blob, every slice
    probability[..., 20:30, 20:30, :] = 0.95  # confident-looking but uncertain blob
    uncertainty[..., 20:30, 20:30, :] = 0.9
    prompts = prompts_from_probability(probability[..., 0], uncertainty[..., 0], kind="box", max_uncertainty=0.75,
                                       largest_component=False)
    x0, y0, x1, y1 = prompts.boxes[0, 0].tolist()
    assert (y0, x0, y1, x1) == (4, 4, 11, 11)  # the uncertain blob does not stretch the box

    branch = SAMAssistedConsistency(build_foundation_model("litemedsam", random_init=True), 0.1, volumes=object(),
                                    max_uncertainty=0.75, slices_per_sample=None, min_prompt_pixels=10)
    uncertainty[..., 4:12, 4:12, 4:] = 0.9  # the certain blob becomes uncertain in slices 4-7
    certain_fg = (probability[0, 0] >= 0.5) & (uncertainty[0, 0] <= 0.75)
    assert branch._choose_slices(certain_fg, torch.Generator().manual_seed(0)) == [0, 1, 2, 3]
    # reliability floor: slices 0-3 predict two blobs of which one is certain (64 of 164 pixels);
    # with the second blob made certain in slices 0-1 they pass a floor of one half, 2-3 do not
    predicted = probability[0, 0] >= 0.5
    certain_fg[20:30, 20:30, :2] = True
    strict = SAMAssistedConsistency(build_foundation_model("litemedsam", random_init=True), 0.1, volumes=object(),
                                    max_uncertainty=0.75, slices_per_sample=None, min_prompt_pixels=10,
                                    min_certain_fraction=0.5)
    assert strict._choose_slices(certain_fg, torch.Generator().manual_seed(0), predicted_fg=predicted) == [0, 1]
    with pytest.raises(ValueError, match="min_certain_fraction"):
        SAMAssistedConsistency(build_foundation_model("litemedsam", random_init=True), 0.1, volumes=object(),
                               min_certain_fraction=0)
    # the map the branch thresholds is UA-MT's entropy scaled by ln 2 to [0, 1]
    engine = _Engine(uncertainty)
    two_class = torch.cat([1 - probability, probability], 1)
    torch.testing.assert_close(branch.uncertainty_map(engine, {"image": probability}, two_class), uncertainty)


def test_uamt_and_the_sam_branch_share_one_set_of_teacher_passes():
    """An auxiliary term asking for UA-MT's uncertainty reuses it: T passes per iteration, not 2T."""
    set_determinism(seed=0)
    network = VNet(n_filters=4, normalization="none", has_dropout=True)
    images = [{"image": torch.randn(1, 16, 16, 16), "label": (torch.rand(1, 16, 16, 16) > 0.5).float()} for _ in range(2)]
    seen: list[torch.Tensor] = []

    class AskForUncertainty:
        name = "probe"

        def __call__(self, engine, unlabelled, student_logits):
            seen.append(engine.teacher_uncertainty(engine, unlabelled, engine.uncertainty_passes, engine.stochastic_teacher))
            return {"probe": student_logits.sum() * 0.0, "probe_weight": 1.0}

    trainer = build_consistency_trainer(
        "uamt", device="cpu", max_epochs=1, epoch_length=2, train_data_loader=DataLoader(Dataset(images), batch_size=1),
        unlabeled_data_loader=DataLoader(Dataset([{"image": i["image"]} for i in images]), batch_size=1),
        network=network, optimizer=torch.optim.SGD(network.parameters(), lr=0.01), loss_function=dice_ce_loss(),
        consistency_weight=0.1, uncertainty_passes=3, auxiliary_terms=[AskForUncertainty()],
    )
    assert isinstance(trainer, UncertaintyAwareMeanTeacherTrainer)
    calls: list[bool] = []
    trainer.ema.teacher.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    trainer.run()
    assert calls == [False, True, True, True] * 2  # one target pass + T=3 stochastic passes per iteration
    assert len(seen) == 2 and all(u.shape == (1, 1, 16, 16, 16) for u in seen)
    assert "probe" in trainer.state.output and "probe_weight" in trainer.state.output


def test_framework_factory():
    network = VNet(n_filters=4)
    loader = DataLoader(Dataset([{"image": torch.zeros(1, 16, 16, 16), "label": torch.zeros(1, 16, 16, 16)}]))
    common = dict(device="cpu", max_epochs=1, train_data_loader=loader, network=network,
                  optimizer=torch.optim.SGD(network.parameters(), lr=0.01), loss_function=dice_ce_loss(),
                  unlabeled_data_loader=loader, teacher=EMATeacher(network), consistency_weight=0.1,
                  uncertainty_passes=4)
    assert type(build_consistency_trainer("mean_teacher", **common)) is MeanTeacherTrainer
    suponly = build_consistency_trainer("suponly", **common)
    assert suponly.unlabeled_data_loader is None and suponly.teacher is None
    with pytest.raises(ValueError, match="supervised-only"):
        build_consistency_trainer("suponly", **common, auxiliary_terms=[lambda *a: {}])
    with pytest.raises(ValueError, match="unknown framework"):
        build_consistency_trainer("fixmatch", **common)


# ---------------------------------------------------------------- the SAM branch on real LA
def test_sam_branch_never_reads_a_label_and_a_poisoned_label_changes_nothing(la_cases, litemedsam):
    items = _unlabelled_patches(la_cases, seed=5, count=1)
    volumes = VolumeLookup([{"image": c["image"], "id": c["id"]} for c in la_cases],
                           data.volume_transforms("infer", target_spacing=SPACING))
    branch = SAMAssistedConsistency(litemedsam, 0.1, volumes, uncertainty="student", slices_per_sample=1, margin=2)
    torch.manual_seed(0)
    logits = torch.randn(1, 2, *PATCH) * 0.1
    logits[:, 1, 8:24, 8:24, :] += 4.0  # a student that sees foreground in the middle of the patch
    engine = _Engine()

    clean = _RecordingBatch(_batch(items))
    terms = branch(engine, clean, logits)
    assert "label" not in clean.read and clean.read <= {"image", "patch_affine", "case_key"}
    assert terms["sam_slices"] == 1 and terms["sam_consistency_weight"] == pytest.approx(0.1)

    poisoned = _RecordingBatch(_batch(items), label=torch.ones(1, 1, *PATCH))
    poisoned_terms = branch(engine, poisoned, logits)
    assert "label" not in poisoned.read
    assert float(poisoned_terms["sam_consistency"]) == float(terms["sam_consistency"])
    # the second call found its slice in the embedding cache
    assert litemedsam.embedding_cache.hits >= 1


def test_sam_target_matches_the_atrium_when_the_student_is_right(la_cases, litemedsam):
    """Crops, flips and rotations are undone exactly: SAM's whole-slice mask lands on the patch.

    The "student" here is built from the ground truth (a test-only oracle, never given to the
    branch), so SAM gets a good box; its target must then overlap the atrium in the patch.
    """
    volumes = VolumeLookup(la_cases, data.volume_transforms("infer", target_spacing=SPACING))
    labelled = data.volume_transforms("labelled", PATCH, SPACING, patch_location=True)
    labelled.set_random_state(11)
    item = labelled(dict(la_cases[1]))
    label = item["label"].as_tensor()[None]
    assert label.sum() > 50
    logits = torch.cat([torch.zeros_like(label), 8.0 * (label - 0.5)], dim=1)
    branch = SAMAssistedConsistency(litemedsam, 0.1, volumes, uncertainty="student", slices_per_sample=2, margin=1,
                                    min_prompt_pixels=20)
    batch = {"image": item["image"].as_tensor()[None], "patch_affine": item["patch_affine"][None],
             "case_key": item["case_key"][None]}
    target, covered, stats = branch.targets(_Engine(), batch, logits)
    assert stats["sam_slices"] >= 1
    predicted, truth = target[covered] > 0.5, label[:, 0][covered] > 0.5
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert dice > 0.6, f"SAM's target does not overlap the atrium (Dice {dice:.2f}): patch geometry is wrong"


def test_sam_branch_refuses_patches_without_location(litemedsam):
    branch = SAMAssistedConsistency(litemedsam, 0.1, volumes=object())
    logits = torch.zeros(1, 2, *PATCH)
    logits[:, 1] = 5.0
    with pytest.raises(KeyError, match="patch_location=True"):
        branch(_Engine(), {"image": torch.zeros(1, 1, *PATCH)}, logits)
    with pytest.raises(ValueError, match="VolumeLookup"):
        SAMAssistedConsistency(litemedsam, 0.1, volumes=None)


def test_volume_metrics_in_mm_and_voxels():
    pred = torch.zeros(20, 20, 20)
    label = torch.zeros(20, 20, 20)
    pred[5:12, 5:12, 5:12] = 1
    label[6:14, 5:12, 5:12] = 1
    result = case_metrics(pred, label, spacing=(1.25, 1.25, 1.25), metrics=VOLUME_METRICS)
    assert set(result) == set(VOLUME_METRICS)
    assert result["hd95"] == pytest.approx(1.25 * result["hd95_voxel"])
    assert result["asd"] == pytest.approx(1.25 * result["asd_voxel"])


def test_sam_med3d_branch_wiring_with_random_weights():
    """The paper's 3D teacher path: 3D points from the certain foreground, a target on the whole patch.

    SAM-Med3D's weights are not available here, so a random-init model checks shapes and wiring.
    """
    pytest.importorskip("medim")
    teacher = build_foundation_model("sam_med3d", random_init=True)
    recorded: list[dict] = []
    decode = teacher.decode

    def recording_decode(embeddings, **prompts):
        recorded.append(prompts)
        return decode(embeddings, **prompts)

    teacher.decode = recording_decode
    branch = SAMAssistedConsistency(teacher, 0.1, uncertainty="student", num_positive=3, num_negative=2)
    assert branch.prompt == "points"
    logits = torch.full((1, 2, 32, 32, 32), -4.0)
    logits[:, 0] = 0.0
    logits[:, 1, 8:24, 8:24, 8:24] = 4.0
    logits.requires_grad_(True)
    terms = branch(_Engine(), {"image": torch.randn(1, 1, 32, 32, 32)}, logits)
    assert terms["sam_volumes"] == 1 and math.isfinite(float(terms["sam_consistency"]))
    terms["sam_consistency"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    points, labels = recorded[0]["points"][0, 0], recorded[0]["point_labels"][0, 0]
    positive = points[labels == 1]
    assert len(positive) == 3 and bool(((positive >= 8) & (positive < 24)).all())
    assert bool(((points[labels == 0] < 8) | (points[labels == 0] >= 24)).any(dim=-1).all())
    with pytest.raises(ValueError, match="points"):
        SAMAssistedConsistency(teacher, 0.1, prompt="box")
