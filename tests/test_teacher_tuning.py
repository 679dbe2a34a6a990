"""The fine-tuned teacher: the tuning stage (recipe, resume, provenance), the tuned-teacher file
(round trip, refusals) and SemiSAM's config plugging it in without reading unlabelled labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_testing import (  # same directory, on sys.path under pytest
    la_subset,
    use_bundle,
)

from samssl import data
from samssl.data.transforms_2d import dermoscopy_transforms
from samssl.foundation import build_foundation_model
from samssl.foundation.peft_tuning import SplitQKV
from samssl.foundation.tuned import read_tuned_teacher
from samssl.stages import teacher_tuning
from samssl.stages.teacher_tuning import (
    labelled_frames,
    tune_promptable_teacher,
    tuned_teacher_file,
)
from samssl.utils.errors import InvalidInputError, MissingInputError

ROOT = Path(__file__).resolve().parents[1]
BOX = torch.tensor([[[20.0, 24.0, 200.0, 210.0]]])


def _ph2_cases(ph2_root: Path, count: int) -> list[dict[str, str]]:
    images = sorted((ph2_root / "images").iterdir())[:count]
    return [{"image": str(i), "label": str(ph2_root / "masks" / f"{i.stem}_lesion.png")} for i in images]


def _logits(model, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(model.encode(image[None]), boxes=BOX).mask_logits


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_tuned_teacher_round_trips_onto_a_fresh_base_with_its_own_identity(ph2_root, tmp_path, lora_rank):
    cases = _ph2_cases(ph2_root, 2)
    settings = {"num_iterations": 2, "batch_size": 2, "learning_rate": 1e-3, "lora_rank": lora_rank}
    path = tuned_teacher_file(lambda: build_foundation_model("litemedsam"), cases, dermoscopy_transforms("eval", 256),
                              {"image_size": 256}, tmp_path / "tuning", settings, seed=0)
    payload = read_tuned_teacher(path)
    assert payload["kind"] == "promptable" and payload["teacher"] == "litemedsam"
    assert [c["image"] for c in payload["labelled_cases"]] == [c["image"] for c in cases]
    assert all(len(c["label_sha256"]) == 16 for c in payload["labelled_cases"])
    assert bool(payload["lora"]) == (lora_rank > 0)

    zero_shot = build_foundation_model("litemedsam")
    tuned = build_foundation_model("litemedsam", tuned=path)
    assert tuned.weights_id.startswith(zero_shot.weights_id + "+tuned:")
    # the embedding cache keys on the encoder: a decoder-only tuning reuses the base's entries, LoRA never does
    assert (tuned.encoder_weights_id == zero_shot.weights_id) == (lora_rank == 0)
    assert (tuned.cache_namespace() == zero_shot.cache_namespace()) == (lora_rank == 0)
    assert not any(isinstance(m, SplitQKV) for m in tuned.image_encoder.modules())  # LoRA merged away
    assert not any(p.requires_grad for p in tuned.parameters())
    image = dermoscopy_transforms("eval", 256)(cases[0])["image"].as_tensor()
    assert not torch.allclose(_logits(tuned, image), _logits(zero_shot, image), atol=1e-4)
    again = build_foundation_model("litemedsam", tuned=path)
    torch.testing.assert_close(_logits(again, image), _logits(tuned, image))

    # the stage is done: a second call computes nothing and returns the same file
    assert tuned_teacher_file(lambda: build_foundation_model("litemedsam"), cases, dermoscopy_transforms("eval", 256),
                              {"image_size": 256}, tmp_path / "tuning", settings, seed=0) == path


def test_tuned_teacher_files_of_another_base_or_kind_are_refused(ph2_root, tmp_path):
    cases = _ph2_cases(ph2_root, 1)
    path = tuned_teacher_file(lambda: build_foundation_model("litemedsam"), cases, dermoscopy_transforms("eval", 256),
                              {"image_size": 256}, tmp_path / "tuning", {"num_iterations": 1, "batch_size": 1})
    payload = torch.load(path, weights_only=True)

    def variant(name: str, **changes) -> Path:
        target = tmp_path / name
        torch.save({**payload, **changes}, target)
        return target

    with pytest.raises(InvalidInputError, match="fine-tuned from 'sam_vit_b'"):
        build_foundation_model("litemedsam", tuned=variant("other_model.pt", teacher="sam_vit_b"))
    with pytest.raises(InvalidInputError, match="other litemedsam weights"):
        build_foundation_model("litemedsam", tuned=variant("other_weights.pt", base_weights="0" * 64))
    with pytest.raises(InvalidInputError, match="promptless"):
        build_foundation_model("litemedsam", tuned=variant("class_tokens.pt", kind="class_tokens"))
    with pytest.raises(InvalidInputError, match="not a fine-tuned teacher file"):
        build_foundation_model("litemedsam", tuned=variant("network.pt", format="a-network/1"))
    (tmp_path / "truncated.pt").write_bytes(Path(path).read_bytes()[:1000])
    with pytest.raises(InvalidInputError, match="cannot be read"):
        build_foundation_model("litemedsam", tuned=tmp_path / "truncated.pt")
    with pytest.raises(MissingInputError, match="no fine-tuned teacher"):
        build_foundation_model("litemedsam", tuned=tmp_path / "missing.pt")


def _synthetic_frames(count: int = 3, size: int = 64) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for k in range(count):
        mask = ((yy - 30 - 3 * k) ** 2 + (xx - 28 - 2 * k) ** 2) < (9 + 2 * k) ** 2
        images.append((mask.float() * 0.6 + 0.2 * torch.rand(size, size, generator=generator))[None])
        masks.append(mask)
    return images, masks


def test_tuning_resumes_after_a_kill_where_it_stopped(tmp_path, monkeypatch):
    images, masks = _synthetic_frames()
    settings = {"num_iterations": 4, "batch_size": 2, "checkpoint_interval": 2, "learning_rate": 1e-3}
    straight = tune_promptable_teacher(build_foundation_model("litemedsam"), images, masks, settings,
                                       tmp_path / "straight", seed=3)

    calls = {"n": 0}
    real_loss = teacher_tuning._dice_bce

    def killed_in_iteration_three(logits, target):
        calls["n"] += 1
        if calls["n"] > 4:  # 2 frames a step: the fifth frame is in step 3
            raise KeyboardInterrupt
        return real_loss(logits, target)

    monkeypatch.setattr(teacher_tuning, "_dice_bce", killed_in_iteration_three)
    with pytest.raises(KeyboardInterrupt):
        tune_promptable_teacher(build_foundation_model("litemedsam"), images, masks, settings, tmp_path / "killed",
                                seed=3)
    assert (tmp_path / "killed" / teacher_tuning.CHECKPOINT_FILE).exists()
    monkeypatch.setattr(teacher_tuning, "_dice_bce", real_loss)
    resumed = tune_promptable_teacher(build_foundation_model("litemedsam"), images, masks, settings,
                                      tmp_path / "killed", seed=3)
    assert not (tmp_path / "killed" / teacher_tuning.CHECKPOINT_FILE).exists()
    a, b = read_tuned_teacher(straight)["mask_decoder"], read_tuned_teacher(resumed)["mask_decoder"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], msg=key)


def test_frames_need_foreground_and_come_from_labelled_slices(tmp_path):
    empty = [torch.zeros(1, 8, 8, 4)]

    def transform(entry):
        return {"image": torch.rand(1, 8, 8, 4), "label": empty[0]}

    with pytest.raises(InvalidInputError, match="nothing to tune the teacher on"):
        labelled_frames([{"image": "a", "label": "b"}], transform)
    label = torch.zeros(1, 8, 8, 4)
    label[0, 2:6, 2:6, 1] = 1  # 16 pixels on slice 1, 4 on slice 2
    label[0, 3:5, 3:5, 2] = 1
    images, masks = labelled_frames([{"image": "a", "label": "b"}],
                                    lambda e: {"image": torch.rand(1, 8, 8, 4), "label": label}, axis=-1,
                                    min_foreground_pixels=16)
    assert len(images) == 1 and images[0].shape == (1, 8, 8) and int(masks[0].sum()) == 16


def test_semisam_config_tunes_its_teacher_on_the_labelled_volumes_only(la_root, tmp_path, monkeypatch):
    from monai.bundle import ConfigParser

    subset = la_subset(la_root, tmp_path / "la", 3)
    opened: list[str] = []
    real_load = data.volume_transforms

    def spying_transforms(mode, *args, **kwargs):
        compose = real_load(mode, *args, **kwargs)

        def call(entry):
            opened.extend(str(v) for k, v in entry.items() if k in ("image", "label"))
            if "label" in entry:
                opened.append("label:" + str(entry["label"]))
            return compose(entry)

        return call

    bundle = use_bundle("semisam_la")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in
                        ("train.json", "cpu.json", "baselines/mean_teacher_semisam_finetuned.json")])
    for key, value in {"dataset_dir": str(subset), "num_labelled": 1, "num_val": 1, "target_spacing": 2.5,
                       "output_dir": str(tmp_path / "run"), "sam#cache_dir": False,
                       "sam#finetune#num_iterations": 1, "sam#finetune#batch_size": 2,
                       "sam#finetune#min_foreground_pixels": 200}.items():
        parser[key] = value
    monkeypatch.setattr(data, "volume_transforms", spying_transforms)
    teacher = parser.get_parsed_content("foundation_model")
    datalist = parser.get_parsed_content("datalist")
    assert "+tuned:" in teacher.weights_id
    payload = read_tuned_teacher(tmp_path / "run" / "teacher_tuning" / teacher_tuning.TUNED_TEACHER_FILE)
    assert [c["image"] for c in payload["labelled_cases"]] == [str(e["image"]) for e in datalist["labelled"]]
    read_labels = {p.split(":", 1)[1] for p in opened if p.startswith("label:")}
    assert read_labels == {str(e["label"]) for e in datalist["labelled"]}
    unlabelled_images = {str(e["image"]) for e in datalist["unlabelled"]}
    assert unlabelled_images and not unlabelled_images & set(opened)  # nothing unlabelled enters the stage


def test_tffs_tuning_frames_are_the_frames_tffs_prompts(la_root):
    use_bundle("ssl_medsam2")
    from scripts.tffs import TrainingFreeFewShot, load_support, tuning_transform

    entry = min(data.msd_datalist(la_root), key=lambda e: e["id"])
    image, label = load_support([entry], 2.5)[0]
    tffs = TrainingFreeFewShot(propagator=None, frame_size=96)
    item = tuning_transform(2.5, 96)(entry)
    frames = torch.movedim(item["image"], -1, 0)  # (Z, 1, S, S) as TFFS's frames
    torch.testing.assert_close(frames, tffs.frames(image))
    torch.testing.assert_close(torch.movedim(item["label"], -1, 0)[:, 0], tffs.masks(label))


def test_tffs_pseudo_labels_of_a_decoder_tuned_teacher_are_not_the_zero_shot_ones(ph2_root, tmp_path):
    use_bundle("ssl_medsam2")
    from scripts.tffs import TrainingFreeFewShot, tffs_fingerprint

    tffs = TrainingFreeFewShot(propagator=None, frame_size=96)
    labelled = [{"image": "a.nii.gz", "label": "b.nii.gz"}]
    zero_shot = build_foundation_model("litemedsam")
    tuned = build_foundation_model("litemedsam", tuned=_tuned_file(ph2_root, tmp_path))
    assert tuned.cache_namespace() == zero_shot.cache_namespace()  # same embeddings ...
    assert tffs_fingerprint(tuned, tffs, labelled, 1.25) != tffs_fingerprint(zero_shot, tffs, labelled, 1.25)


def _tuned_file(ph2_root: Path, tmp_path: Path) -> str:
    return tuned_teacher_file(lambda: build_foundation_model("litemedsam"), _ph2_cases(ph2_root, 1),
                              dermoscopy_transforms("eval", 256), {"image_size": 256}, tmp_path / "tuning",
                              {"num_iterations": 1, "batch_size": 1})


def test_ssl_medsam2_and_samkd_configs_load_a_tuned_teacher_file(la_root, ph2_root, tmp_path):
    from monai.bundle import ConfigParser

    from samssl.foundation.peft_tuning import Adapter

    tuned = _tuned_file(ph2_root, tmp_path)
    bundle = use_bundle("ssl_medsam2")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in ("train.json", "cpu.json")])
    for key, value in {"dataset_dir": str(la_subset(la_root, tmp_path / "la", 3)), "num_labelled": 1, "num_val": 1,
                       "output_dir": str(tmp_path / "ssl"), "tffs#cache_dir": False, "tffs#encoder_runtime": "fp32",
                       "tffs#tuned": tuned}.items():
        parser[key] = value
    assert "+tuned:" in parser.get_parsed_content("foundation_model").weights_id

    bundle = use_bundle("samkd_dualtask_skin")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / c) for c in ("train.json", "cpu.json")])
    for key, value in {"dataset_dir": str(data.ph2_subset(ph2_root, tmp_path / "ph2", 12)), "num_labelled": 4,
                       "output_dir": str(tmp_path / "samkd"), "sam_cache_dir": False, "sam_tuned": tuned}.items():
        parser[key] = value
    sam = parser.get_parsed_content("sam")
    assert "+tuned:" in sam.weights_id
    assert any(isinstance(m, Adapter) for m in sam.mask_decoder.modules())  # its adapters train on the tuned model


def test_sfr_stitched_sam_writes_the_shared_format_and_reads_its_older_files(ph2_root, tmp_path):
    use_bundle("sfr_la")
    from scripts.stitched_sam import StitchedSAM

    model = StitchedSAM(build_foundation_model("litemedsam"), num_classes=2, lora_rank=0)
    path = model.save_tuned(tmp_path / "sam_tuned.pt", [{"image": "a.nii.gz", "label": "b.nii.gz"}], {"lr": 1})
    payload = read_tuned_teacher(path)
    assert payload["kind"] == "class_tokens" and payload["num_classes"] == 2
    assert payload["labelled_cases"][0]["image"] == "a.nii.gz"
    with pytest.raises(InvalidInputError, match="promptless"):  # SemiSAM cannot prompt SFR's model
        build_foundation_model("litemedsam", tuned=path)

    legacy = {k: v for k, v in torch.load(path, weights_only=True).items()
              if k not in ("kind", "labelled_cases", "settings")}
    torch.save({**legacy, "format": "sfr-stitched-sam/1"}, tmp_path / "legacy.pt")
    assert StitchedSAM.load_tuned(build_foundation_model("litemedsam"), tmp_path / "legacy.pt").num_classes == 2
    with pytest.raises(InvalidInputError, match="promptable"):
        StitchedSAM.load_tuned(build_foundation_model("litemedsam"), _tuned_file(ph2_root, tmp_path))


def test_a_diverging_tuning_stops_with_one_clear_line(tmp_path, monkeypatch):
    from samssl.utils.errors import NonFiniteLossError

    images, masks = _synthetic_frames(2)
    monkeypatch.setattr(teacher_tuning, "_dice_bce", lambda logits, target: logits.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match="lower it and run again"):
        tune_promptable_teacher(build_foundation_model("litemedsam"), images, masks,
                                {"num_iterations": 2, "batch_size": 2}, tmp_path / "nan")
    assert not (tmp_path / "nan" / teacher_tuning.TUNED_TEACHER_FILE).exists()
