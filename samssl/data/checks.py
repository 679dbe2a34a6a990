"""Input checks as MapTransforms: fail early, naming the file, instead of deep inside a network.

A grey JPEG in an RGB data set, a 0/255 mask read as class 255, or a mask saved at another size
than its image all "work" for a while and then produce a shape error in a convolution or a Dice
of 0. These transforms turn them into one clear message, or fix what is unambiguous (an alpha
channel, 0/255 masks).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey

from samssl.utils.errors import InvalidInputError

__all__ = ["EnsureChannelsd", "BinarizeLabeld", "CheckSpatialShapesMatchd", "source_of"]


def source_of(image: object) -> str:
    """The file an array was loaded from, for error messages (``"<unknown file>"`` if not known)."""
    if isinstance(image, MetaTensor):
        return str(image.meta.get(ImageMetaKey.FILENAME_OR_OBJ, "<unknown file>"))
    return "<unknown file>"


class EnsureChannelsd(MapTransform):
    """Checks a channel-first image has ``num_channels`` channels; drops the alpha channel of RGBA.

    Args:
        keys: keys of the channel-first images to check.
        num_channels: channels expected (3 for RGB).
        allow_missing_keys: don't raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, num_channels: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_channels = num_channels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            channels = image.shape[0]
            if self.num_channels == 3 and channels == 4:
                d[key] = image[:3]  # RGBA: the alpha channel carries no image content
            elif channels != self.num_channels:
                kind = "an RGB image" if self.num_channels == 3 else "an image"
                raise InvalidInputError(
                    f"expected {kind} with {self.num_channels} channels, got {channels} in {source_of(image)}"
                    + (" (convert it to RGB first, e.g. PIL's Image.convert('RGB'))" if self.num_channels == 3 else "")
                )
        return d


class BinarizeLabeld(MapTransform):
    """Turns a mask into one channel of {0, 1}, whatever it was saved as.

    Masks come as 0/255 (ISIC, PH2), 0/1, or RGB copies of either. The channels are merged by
    maximum and the result thresholded. Any other value (a multi-class label, a mask saved as JPEG
    or resized with interpolation, an image given as its own label) is refused with the file named:
    thresholding it would silently train on a different mask than the one drawn.

    Args:
        keys: keys of the channel-first masks.
        threshold: foreground is ``mask > threshold`` (times the mask's maximum when ``relative``).
        relative: scale the threshold by the mask's maximum, so 0/1 and 0/255 masks both work.
            Use ``relative=False, threshold=0.5, strict=False`` for multi-class volumes where any
            class > 0 is foreground.
        strict: refuse masks with values other than {0, 1} or {0, 255}.
        allow_missing_keys: don't raise if a key is absent.
    """

    BINARY_VALUE_SETS = (frozenset({0.0, 1.0}), frozenset({0.0, 255.0}))

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float = 0.5,
        relative: bool = True,
        strict: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold
        self.relative = relative
        self.strict = strict

    def _check_binary(self, key: Hashable, mask: torch.Tensor, merged: torch.Tensor) -> None:
        values = frozenset(float(v) for v in torch.unique(merged.float())[:4].tolist())
        if any(values <= allowed for allowed in self.BINARY_VALUE_SETS):
            return
        shown = sorted(values)[:3]
        raise InvalidInputError(
            f"{key} of {source_of(mask)} has values {shown}{' ...' if len(values) > 3 else ''}, not a binary mask "
            "(0/1 or 0/255). Save the lesion mask as a lossless 0/255 or 0/1 image (PNG/NIfTI, not JPEG, not "
            "resized with interpolation); for a multi-class label, keep the class of interest as 1 and the rest 0."
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            merged = mask.amax(dim=0, keepdim=True) if mask.shape[0] > 1 else mask
            if self.strict:
                self._check_binary(key, mask, merged)
            cutoff = self.threshold * float(merged.max()) if self.relative else self.threshold
            if self.relative and float(merged.max()) <= 0:
                cutoff = 0.0  # an empty mask stays empty
            d[key] = (merged > cutoff).to(torch.float32)
        return d


class CheckSpatialShapesMatchd(MapTransform):
    """Raises when the channel-first arrays under ``keys`` differ in spatial size.

    Place it right after loading, before any resize would hide a mask saved at the wrong size.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if present:
            reference = present[0]
            for key in present[1:]:
                if tuple(d[key].shape[1:]) != tuple(d[reference].shape[1:]):
                    raise InvalidInputError(
                        f"spatial size mismatch: {key} {tuple(d[key].shape[1:])} in {source_of(d[key])} vs "
                        f"{reference} {tuple(d[reference].shape[1:])} in {source_of(d[reference])}"
                    )
        return d
