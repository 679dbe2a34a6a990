"""Transforms for 2D dermoscopy images (ISIC, PH2 and the demo data).

One function builds the pipeline for each use, so that every 2D bundle loads, checks, scales and
augments images the same way:

* ``"labelled"``: training, image + label, random augmentation;
* ``"unlabelled"``: training, image only, the same augmentation (entries have no label by design);
* ``"eval"``: image + label, resized, no randomness;
* ``"infer"``: image only, resized; every spatial step is invertible, so ``monai.transforms.Invertd``
  maps a prediction back to the original image size.

Output: ``image`` (3, S, S) float32 in [0, 1]; ``label`` (1, S, S) float32 in {0, 1}. Spatial
axes follow MONAI's ``PILReader`` convention (width first), which ``SaveImage`` undoes on writing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandFlipd,
    RandomizableTransform,
    RandRotate90d,
    RandRotated,
    Resized,
    ScaleIntensityRanged,
)
from monai.utils import convert_to_dst_type, optional_import

from samssl.data.checks import BinarizeLabeld, CheckSpatialShapesMatchd, EnsureChannelsd

tv_functional, _ = optional_import("torchvision.transforms.v2.functional")

__all__ = ["DERMOSCOPY_MODES", "RandColorJitterd", "dermoscopy_transforms"]

DERMOSCOPY_MODES = ("labelled", "unlabelled", "eval", "infer")


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Random brightness, contrast, saturation and hue of RGB images in [0, 1], in random order.

    Dermoscopy colour varies with the device, lighting and skin type far more than geometry does;
    MONAI has intensity transforms but none that act on saturation or hue, so this wraps
    torchvision's colour functions with MONAI's seeded random state (``set_random_state`` and
    ``monai.utils.set_determinism`` make it reproducible).

    Args:
        keys: keys of channel-first RGB images in [0, 1].
        brightness, contrast, saturation: factors are drawn from ``[1 - x, 1 + x]``.
        hue: shift drawn from ``[-hue, hue]`` (fraction of the colour wheel, at most 0.5).
        prob: probability of jittering an image at all.
    """

    def __init__(
        self,
        keys: KeysCollection,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        prob: float = 0.8,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        self.hue = hue
        self._factors: dict[str, float] = {}
        self._order: Sequence[int] = ()

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._factors = {name: float(self.R.uniform(1 - r, 1 + r)) for name, r in self.ranges.items()}
        self._factors["hue"] = float(self.R.uniform(-self.hue, self.hue))
        self._order = self.R.permutation(4).tolist()

    def _jitter(self, image: torch.Tensor) -> torch.Tensor:
        operations = (
            lambda x: tv_functional.adjust_brightness(x, self._factors["brightness"]),
            lambda x: tv_functional.adjust_contrast(x, self._factors["contrast"]),
            lambda x: tv_functional.adjust_saturation(x, self._factors["saturation"]),
            lambda x: tv_functional.adjust_hue(x, self._factors["hue"]),
        )
        out = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        for index in self._order:
            out = operations[index](out)
        return convert_to_dst_type(out.clamp(0.0, 1.0), image)[0]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            if d[key].shape[0] != 3:
                raise ValueError(f"colour jitter needs RGB images (3 channels), got {d[key].shape[0]} for '{key}'")
            d[key] = self._jitter(d[key])
        return d


def _keys_for(mode: str) -> tuple[str, ...]:
    if mode not in DERMOSCOPY_MODES:
        raise ValueError(f"unknown mode '{mode}': use one of {', '.join(DERMOSCOPY_MODES)}")
    return ("image", "label") if mode in ("labelled", "eval") else ("image",)


def _augmentation(keys: tuple[str, ...]) -> list:
    """Geometry on image and label alike (nearest for the label), colour on the image only."""
    interpolation = ("bilinear", "nearest")[: len(keys)]
    return [
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys, prob=0.5, max_k=3),
        RandRotated(keys, range_x=math.radians(15), prob=0.3, mode=interpolation, padding_mode="zeros"),
        RandColorJitterd("image", brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, prob=0.8),
    ]


def dermoscopy_transforms(mode: str, image_size: int = 256) -> Compose:
    """Transforms of dermoscopy datalist entries for ``mode`` (see the module docstring).

    Steps: load the RGB JPEG/PNG (and mask), channel first, check 3 channels (drop alpha),
    binarise the mask and check it has the image's size (before any resize could hide a
    mismatch), scale to [0, 1], resize to ``image_size`` (bilinear with anti-aliasing for the
    image, nearest for the mask), augment when training, float32.
    """
    keys = _keys_for(mode)
    has_label = "label" in keys
    steps: list = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        EnsureChannelsd("image", num_channels=3),
    ]
    if has_label:
        steps += [CheckSpatialShapesMatchd(keys), BinarizeLabeld("label")]
    steps += [
        ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Resized(
            keys,
            spatial_size=(image_size, image_size),
            mode=("bilinear", "nearest")[: len(keys)],
            anti_aliasing=(True, False)[: len(keys)],
        ),
    ]
    if mode in ("labelled", "unlabelled"):
        steps += _augmentation(keys)
    steps.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(steps)
