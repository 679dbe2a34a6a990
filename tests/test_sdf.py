"""Signed distance map: values against brute-force distances, edge cases, array and dict transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.utils import one_hot
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRanged
from scipy.ndimage import distance_transform_edt
from scipy.spatial.distance import cdist
from skimage.segmentation import find_boundaries

from samssl.data import SignedDistanceMap, SignedDistanceMapd, sdf_to_mask_probability, signed_distance_map


def _disk(size: int = 65, radius: int = 10) -> np.ndarray:
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius**2


def _brute_force_sdf(mask: np.ndarray, spacing=None) -> np.ndarray:
    """Reference without any distance transform: nearest-voxel distances by exhaustive search."""
    scale = np.ones(mask.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    fg, bg = np.argwhere(mask) * scale, np.argwhere(~mask) * scale
    d_in, d_out = np.zeros(mask.shape), np.zeros(mask.shape)
    d_in[mask] = cdist(fg, bg).min(axis=1)
    d_out[~mask] = cdist(bg, fg).min(axis=1)
    sdf = d_out / d_out.max() - d_in / d_in.max()  # both minima are 0
    sdf[find_boundaries(mask, mode="inner")] = 0
    return sdf


def test_disk_matches_brute_force_and_known_values():
    mask = _disk(65, 10)
    sdf = signed_distance_map(mask)
    assert sdf.dtype == np.float32 and sdf.shape == mask.shape
    np.testing.assert_allclose(sdf, _brute_force_sdf(mask), atol=1e-6)

    boundary = find_boundaries(mask, mode="inner")
    assert np.all(sdf[boundary] == 0)
    assert np.all(sdf[mask & ~boundary] < 0) and np.all(sdf[~mask] > 0)
    assert sdf.min() == -1.0 and sdf.max() == 1.0
    # The centre is the deepest point (r + 1 = 11 from the first background pixel on an axis) -> -1.
    assert sdf[32, 32] == -1.0
    # The corners are farthest outside -> +1; on the axis, k pixels out of the disk is k / that distance.
    corner_distance = np.sqrt(((np.argwhere(mask) - [0, 0]) ** 2).sum(axis=1)).min()
    assert sdf[0, 0] == 1.0
    for k in (1, 5, 12):
        assert sdf[32, 32 + 10 + k] == pytest.approx(k / corner_distance, abs=1e-6)


def test_box_3d_against_scipy_and_spacing():
    mask = np.zeros((24, 20, 16), bool)
    mask[6:18, 5:15, 4:12] = True
    sdf = signed_distance_map(mask)
    inside, outside = distance_transform_edt(mask), distance_transform_edt(~mask)
    expected = outside / outside.max() - inside / inside.max()
    expected[find_boundaries(mask, mode="inner")] = 0
    np.testing.assert_allclose(sdf, expected, atol=1e-6)
    assert sdf.min() == -1.0 and sdf.max() == 1.0
    # Along axis 0, k voxels beyond the face at index 17: outside distance exactly k.
    assert sdf[17 + 3, 10, 8] * outside.max() == pytest.approx(3.0, abs=1e-5)

    spacing = (2.0, 1.0, 0.5)
    sdf_mm = signed_distance_map(mask, spacing=spacing)
    np.testing.assert_allclose(sdf_mm, _brute_force_sdf(mask, spacing), atol=1e-6)
    assert not np.allclose(sdf_mm, sdf)


@pytest.mark.parametrize("shape", [(16, 16), (8, 10, 12)])
def test_degenerate_masks_are_finite(shape):
    empty = np.zeros(shape, bool)
    np.testing.assert_array_equal(signed_distance_map(empty), np.ones(shape, np.float32))
    np.testing.assert_array_equal(signed_distance_map(~empty), -np.ones(shape, np.float32))

    single = empty.copy()
    single[(3,) * len(shape)] = True
    sdf = signed_distance_map(single)
    assert np.isfinite(sdf).all()
    assert sdf[(3,) * len(shape)] == 0  # a single voxel is all boundary
    assert np.all(sdf[~single] > 0) and sdf.max() == 1.0


def test_mask_touching_the_border():
    mask = np.zeros((20, 20), bool)
    mask[:, :6] = True  # cut by the field of view on three sides
    sdf = signed_distance_map(mask)
    assert np.isfinite(sdf).all() and sdf.min() == -1.0 and sdf.max() == 1.0
    # Only the column facing the background is boundary: the array edge is not.
    assert np.all(sdf[:, 5] == 0) and np.all(sdf[:, :5] < 0) and np.all(sdf[:, 6:] > 0)
    # Column j < 6 is 6 - j from the first background column; the boundary column (distance 1) is 0.
    np.testing.assert_allclose(sdf[0, :6], [-6 / 6, -5 / 6, -4 / 6, -3 / 6, -2 / 6, 0], atol=1e-6)
    np.testing.assert_allclose(sdf, _brute_force_sdf(mask), atol=1e-6)


def test_torch_input_keeps_type_and_values():
    mask = _disk(33, 6)
    out = signed_distance_map(torch.from_numpy(mask.astype(np.uint8)))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), signed_distance_map(mask))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="2D or 3D"):
        signed_distance_map(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match="spacing"):
        signed_distance_map(np.zeros((8, 8)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="binarise"):
        SignedDistanceMap()(np.full((1, 8, 8), 255))
    with pytest.raises(ValueError, match="channels"):
        SignedDistanceMap(num_classes=2)(np.zeros((3, 8, 8)))
    with pytest.raises(TypeError):
        sdf_to_mask_probability(np.zeros(3))


def test_multiclass_label_map_and_one_hot_agree():
    label = np.zeros((1, 32, 32), np.int64)
    label[0, 4:12, 4:12] = 1
    label[0, 18:28, 15:30] = 2
    from_map = SignedDistanceMap(num_classes=3)(label)
    from_one_hot = SignedDistanceMap(num_classes=3)(one_hot(torch.from_numpy(label)[None], 3)[0])
    assert from_map.shape == (2, 32, 32)
    np.testing.assert_array_equal(from_one_hot.numpy(), from_map)
    for c in (1, 2):
        np.testing.assert_array_equal(from_map[c - 1], signed_distance_map(label[0] == c))

    with_background = SignedDistanceMap(num_classes=3, include_background=True)(label)
    assert with_background.shape == (3, 32, 32)
    np.testing.assert_array_equal(with_background[0], signed_distance_map(label[0] == 0))


def test_dict_transform_on_channel_first_label():
    label = MetaTensor(torch.from_numpy(_disk(48, 9)[None].astype(np.float32)), meta={"filename_or_obj": "case_0"})
    out = SignedDistanceMapd(keys="label", output_key="label_sdf")({"label": label, "image": torch.zeros(3, 48, 48)})
    assert set(out) == {"label", "image", "label_sdf"}
    assert out["label"] is label
    sdf = out["label_sdf"]
    assert isinstance(sdf, MetaTensor) and sdf.meta["filename_or_obj"] == "case_0"
    assert sdf.shape == (1, 48, 48) and sdf.dtype == torch.float32
    np.testing.assert_array_equal(sdf[0].numpy(), signed_distance_map(_disk(48, 9)))

    unlabelled = SignedDistanceMapd(keys="label", allow_missing_keys=True)({"image": torch.zeros(3, 8, 8)})
    assert "label_sdf" not in unlabelled


def test_dict_transform_in_a_loading_pipeline(ph2_root):
    mask_file = sorted((ph2_root / "masks").glob("*_lesion.png"))[0]
    pipeline = Compose(
        [
            LoadImaged(keys="label", image_only=True),
            EnsureChannelFirstd(keys="label"),
            Resized(keys="label", spatial_size=(64, 64), mode="nearest"),
            ScaleIntensityRanged(keys="label", a_min=0, a_max=255, b_min=0, b_max=1),  # 0/255 -> 0/1
            SignedDistanceMapd(keys="label", output_key="label_sdf"),
        ]
    )
    data = pipeline({"label": str(mask_file)})
    label, sdf = data["label"][0].numpy() > 0.5, data["label_sdf"][0].numpy()
    assert sdf.shape == (64, 64) and np.isfinite(sdf).all()
    assert label.any() and not label.all()
    assert np.all(sdf[~label] > 0) and np.all(sdf[label] <= 0)
    assert sdf.min() == -1.0 and sdf.max() == 1.0


def test_sdf_to_mask_probability_recovers_the_mask_and_is_differentiable():
    mask = _disk(33, 8)
    sdf = torch.from_numpy(signed_distance_map(mask)).requires_grad_()
    probability = sdf_to_mask_probability(sdf)
    boundary = torch.from_numpy(find_boundaries(mask, mode="inner"))
    inside = torch.from_numpy(mask) & ~boundary
    assert torch.all(probability[inside] > 0.999) and torch.all(probability[~torch.from_numpy(mask)] < 0.001)
    assert torch.allclose(probability[boundary], torch.tensor(0.5))
    probability.sum().backward()
    assert sdf.grad is not None and torch.isfinite(sdf.grad).all()
    # Empty label: the +1 convention maps to an empty mask (DTC's 0 would give 0.5 everywhere).
    empty = sdf_to_mask_probability(torch.from_numpy(signed_distance_map(np.zeros((8, 8), bool))))
    assert torch.all(empty < 1e-6)
