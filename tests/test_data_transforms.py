"""2D/3D transforms, the h5 reader and the input checks, on small real subsets."""

from __future__ import annotations

import re
from contextlib import contextmanager

import h5py
import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.transforms import Invertd, LoadImaged
from PIL import Image

from samssl.data import (
    BinarizeLabeld,
    CheckSpatialShapesMatchd,
    EnsureChannelsd,
    H5VolumeReader,
    RandColorJitterd,
    dermoscopy_transforms,
    isic_datalist,
    make_dataset,
    msd_datalist,
    ph2_datalist,
    uamt_h5_datalist,
    volume_transforms,
)

PATCH = (64, 64, 48)


@contextmanager
def raises_from_transform(exception: type[Exception], match: str):
    """Like ``pytest.raises`` for the error a transform raised inside a ``Compose``.

    MONAI wraps it in ``RuntimeError("applying transform ...")``; the message a user reads first
    in the traceback is the original one, which is what is checked here.
    """
    with pytest.raises(Exception) as info:
        yield
    error: BaseException = info.value
    while error.__cause__ is not None and not isinstance(error, exception):
        error = error.__cause__
    assert isinstance(error, exception), f"expected {exception.__name__}, got {info.value!r}"
    assert re.search(match, str(error)), f"'{match}' not found in: {error}"


def _assert_image_and_mask(sample: dict, size: int = 256) -> None:
    image, label = sample["image"], sample["label"]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.01
    assert label.shape == (1, size, size) and label.dtype == torch.float32
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}


# ------------------------------------------------------------------------------------------ 2D
@pytest.mark.parametrize("mode", ["labelled", "eval"])
def test_dermoscopy_transforms_on_real_pairs(mode: str, ph2_root, isic_root) -> None:
    entries = ph2_datalist(ph2_root)[:2] + isic_datalist(isic_root)[-1:]  # ISIC's last ones are 1024 px
    transform = dermoscopy_transforms(mode)
    transform.set_random_state(0)
    for entry in entries:
        _assert_image_and_mask(transform(entry))


def test_eval_is_deterministic_and_training_augments(ph2_root) -> None:
    entry = ph2_datalist(ph2_root)[0]
    evaluation = dermoscopy_transforms("eval")
    assert torch.equal(evaluation(entry)["image"], evaluation(entry)["image"])
    training = dermoscopy_transforms("labelled").set_random_state(1)
    samples = [training(entry) for _ in range(4)]
    assert any(not torch.equal(samples[0]["image"], s["image"]) for s in samples[1:])
    # geometry is shared: the label moves with the image (the lesion is darker than the skin)
    for sample in samples:
        lesion, skin = sample["image"][:, sample["label"][0] > 0], sample["image"][:, sample["label"][0] == 0]
        assert float(lesion.mean()) < float(skin.mean())


def test_unlabelled_mode_needs_no_label_and_batches(ph2_root) -> None:
    entries = [{"image": e["image"], "id": e["id"]} for e in ph2_datalist(ph2_root)[:2]]
    dataset = make_dataset(entries, dermoscopy_transforms("unlabelled", image_size=128), cache=True)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["image"].shape == (2, 3, 128, 128) and "label" not in batch


def test_infer_inverts_to_the_full_original_size(isic_root) -> None:
    entry = next(e for e in isic_datalist(isic_root) if e["id"] == "ISIC_0001769")  # a 3024 x 2016 original
    original_size = Image.open(entry["image"]).size
    transform = dermoscopy_transforms("infer")
    sample = transform({"image": entry["image"]})
    assert sample["image"].shape == (3, 256, 256)
    sample["pred"] = MetaTensor(torch.zeros(1, 256, 256))
    sample["pred"][:, 100:150, 80:200] = 1
    restored = Invertd("pred", transform=transform, orig_keys="image", nearest_interp=True)(sample)["pred"]
    assert tuple(restored.shape[1:]) == original_size  # MONAI's PIL convention: (width, height)
    assert set(torch.unique(restored).tolist()) == {0.0, 1.0}


def test_grey_image_is_rejected_with_its_name(ph2_root, tmp_path) -> None:
    grey = tmp_path / "grey_lesion.jpg"
    Image.open(ph2_datalist(ph2_root)[0]["image"]).convert("L").save(grey)
    with raises_from_transform(ValueError, r"expected an RGB image with 3 channels, got 1 in .*grey_lesion.jpg"):
        dermoscopy_transforms("infer")({"image": str(grey)})


def test_rgba_drops_alpha_and_rgb_mask_is_binarised(ph2_root, tmp_path) -> None:
    entry = ph2_datalist(ph2_root)[0]
    Image.open(entry["image"]).convert("RGBA").save(tmp_path / "rgba.png")
    Image.open(entry["label"]).convert("RGB").save(tmp_path / "rgb_mask.png")
    rgba_entry = {"image": str(tmp_path / "rgba.png"), "label": str(tmp_path / "rgb_mask.png")}
    sample = dermoscopy_transforms("eval")(rgba_entry)
    reference = dermoscopy_transforms("eval")(entry)
    _assert_image_and_mask(sample)
    assert torch.allclose(sample["image"], reference["image"], atol=1 / 255)  # PNG vs JPEG decode of one image
    assert torch.equal(sample["label"], reference["label"])


def test_mask_of_another_size_is_caught_before_resize(ph2_root, tmp_path) -> None:
    entry = ph2_datalist(ph2_root)[0]
    small_mask = tmp_path / "small_mask.png"
    Image.open(entry["label"]).resize((100, 80)).save(small_mask)
    with raises_from_transform(ValueError, r"spatial size mismatch: label \(100, 80\) in .*small_mask.png vs image"):
        dermoscopy_transforms("eval")({"image": entry["image"], "label": str(small_mask)})


def test_missing_image_file_names_it(tmp_path) -> None:
    with raises_from_transform(FileNotFoundError, "nowhere.jpg"):
        dermoscopy_transforms("infer")({"image": str(tmp_path / "nowhere.jpg")})


@pytest.mark.parametrize("values", [[0, 1, 2], [0, 128, 255], [0.0, 0.5, 1.0]])
def test_a_label_that_is_not_a_binary_mask_is_refused_with_the_file_and_the_fix(tmp_path, values) -> None:
    from monai.data import MetaTensor

    label = MetaTensor(torch.tensor([[values]], dtype=torch.float32), meta={"filename_or_obj": "case_7_mask.png"})
    with pytest.raises(ValueError, match=r"label of case_7_mask.png has values .* not a binary mask .*lossless"):
        BinarizeLabeld("label")({"label": label})
    with pytest.raises(ValueError, match="not a binary mask"):
        BinarizeLabeld("label", threshold=0.5, relative=False)({"label": label})


def test_checks_directly() -> None:
    rgb = torch.tensor([[[0, 255], [255, 0]]] * 2 + [[[0, 0], [255, 0]]], dtype=torch.uint8)
    mask = BinarizeLabeld("label")({"label": rgb})["label"]
    assert mask.shape == (1, 2, 2) and mask.tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    soft = BinarizeLabeld("label", strict=False)({"label": torch.tensor([[[0, 255], [128, 0]]], dtype=torch.uint8)})
    assert soft["label"].tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    unit = BinarizeLabeld("label")({"label": torch.tensor([[[0.0, 1.0]]])})["label"]
    assert unit.tolist() == [[[0.0, 1.0]]]
    empty = BinarizeLabeld("label")({"label": torch.zeros(1, 2, 2)})["label"]
    assert float(empty.sum()) == 0
    multi_class = BinarizeLabeld("label", relative=False, strict=False)({"label": torch.tensor([[[0, 1, 2]]])})["label"]
    assert multi_class.tolist() == [[[0.0, 1.0, 1.0]]]
    with pytest.raises(ValueError, match="got 2 in <unknown file>"):
        EnsureChannelsd("image")({"image": torch.zeros(2, 4, 4)})
    with pytest.raises(ValueError, match=r"label \(4, 5\) in <unknown file> vs image \(4, 4\)"):
        CheckSpatialShapesMatchd(("image", "label"))({"image": torch.zeros(3, 4, 4), "label": torch.zeros(1, 4, 5)})


def test_color_jitter_is_seeded_and_keeps_range() -> None:
    image = torch.rand(3, 16, 16)
    first = RandColorJitterd("image", prob=1.0).set_random_state(5)({"image": image})["image"]
    second = RandColorJitterd("image", prob=1.0).set_random_state(5)({"image": image})["image"]
    assert torch.equal(first, second) and not torch.equal(first, image)
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown mode 'train'"):
        dermoscopy_transforms("train")
    with pytest.raises(ValueError, match="unknown mode 'train'"):
        volume_transforms("train")


# ------------------------------------------------------------------------------------------ 3D
@pytest.fixture(scope="module")
def la_nifti_entry(la_root):
    return msd_datalist(la_root)[0]


@pytest.fixture(scope="module")
def la_h5_entry(la_h5_root, la_nifti_entry):
    entry = next(e for e in uamt_h5_datalist(la_h5_root) if e["id"] == la_nifti_entry["id"])
    return entry


def test_h5_reader_matches_nifti(la_h5_entry, la_nifti_entry) -> None:
    image = LoadImaged("image", reader=H5VolumeReader("image", spacing=0.625), ensure_channel_first=True)(la_h5_entry)
    label = LoadImaged("label", reader=H5VolumeReader("label"))(la_h5_entry)["label"]
    nifti = LoadImaged(("image", "label"), ensure_channel_first=True)(la_nifti_entry)
    assert image["image"].shape == nifti["image"].shape
    assert torch.allclose(image["image"], nifti["image"], atol=1e-3)
    assert torch.equal(label, nifti["label"][0])
    assert torch.allclose(image["image"].affine, nifti["image"].affine.to(torch.float64))
    assert image["image"].meta["filename_or_obj"] == la_h5_entry["image"]
    assert tuple(image["image"].meta["spatial_shape"]) == tuple(label.shape)


def test_h5_reader_names_missing_dataset(la_h5_entry, tmp_path) -> None:
    with raises_from_transform(ValueError, r"mri_norm2.h5 has no dataset 'mask' \(datasets present: image, label\)"):
        LoadImaged("label", reader=H5VolumeReader("mask"))(la_h5_entry)
    only_image = tmp_path / "only_image.h5"
    with h5py.File(only_image, "w") as f:
        f["image"] = np.zeros((8, 8, 8), np.float32)
    with raises_from_transform(ValueError, "only_image.h5 has no dataset 'label'"):
        volume_transforms("eval")({"image": str(only_image), "label": str(only_image)})


@pytest.mark.parametrize("source", ["nifti", "h5"])
def test_volume_training_patch(source, la_nifti_entry, la_h5_entry) -> None:
    entry = la_nifti_entry if source == "nifti" else la_h5_entry
    transform = volume_transforms("labelled", patch_size=PATCH, target_spacing=1.25).set_random_state(0)
    sample = transform(entry)
    assert sample["image"].shape == (1, *PATCH) and sample["label"].shape == (1, *PATCH)
    assert sample["image"].dtype == torch.float32 and set(torch.unique(sample["label"]).tolist()) <= {0.0, 1.0}
    assert torch.allclose(sample["image"].affine.diagonal()[:3].abs(), torch.full((3,), 1.25, dtype=torch.float64))
    unlabelled = volume_transforms("unlabelled", patch_size=PATCH, target_spacing=1.25)({"image": entry["image"]})
    assert unlabelled["image"].shape == (1, *PATCH) and "label" not in unlabelled


def test_volume_eval_keeps_the_whole_volume_and_h5_equals_nifti(la_nifti_entry, la_h5_entry) -> None:
    transform = volume_transforms("eval", target_spacing=1.25)
    nifti, h5 = transform(la_nifti_entry), transform(la_h5_entry)
    native_shape = tuple(LoadImaged("image")(la_nifti_entry)["image"].shape)  # 0.625 mm voxels
    expected = tuple(round(s * 0.625 / 1.25) for s in native_shape)
    assert tuple(nifti["image"].shape[1:]) == expected == tuple(nifti["label"].shape[1:])
    assert torch.allclose(nifti["image"], h5["image"], atol=1e-3) and torch.equal(nifti["label"], h5["label"])
    assert abs(float(nifti["image"].mean())) < 1e-3 and 0.02 < float(nifti["label"].mean()) < 0.3
    infer = volume_transforms("infer", target_spacing=1.25)
    sample = infer({"image": la_nifti_entry["image"]})
    sample["pred"] = MetaTensor((sample["image"] > 1.0).float())
    restored = Invertd("pred", transform=infer, orig_keys="image", nearest_interp=True)(sample)["pred"]
    assert tuple(restored.shape[1:]) == native_shape
