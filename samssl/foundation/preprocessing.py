"""Geometry and intensity preprocessing of a promptable segmenter, and its inverse.

Every SAM-family model expects a fixed square input (256 for LiteMedSAM, 1024 for SAM/SAM2,
128^3 for SAM-Med3D) with its own intensity convention. Callers should never have to know
either: they hand over images in their own pixel grid and get prompts mapped in and logits
mapped back by the one object below. Keeping it in one place is also what makes the
embedding cache safe: :meth:`InputTransform.signature` names everything that changes the
encoder input, so two transforms that differ in any way never share cache entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

IntensityMode = Literal["minmax", "zscore", "none"]

#: Logit used for the padded border of a mask prompt: clearly background for the decoder,
#: far enough from zero that interpolation near the border does not create foreground.
PAD_LOGIT = -20.0


@dataclass(frozen=True)
class InputTransform:
    """Maps caller images/prompts into a model's input frame and logits back out.

    Args:
        target_size: side length of the (square or cubic) model input.
        spatial_dims: 2 for images, 3 for volumes.
        keep_aspect_ratio: resize the longest side to ``target_size`` and zero-pad the rest
            (SAM, LiteMedSAM, SAM-Med3D); ``False`` stretches every side to ``target_size``
            (SAM2, whose transforms resize to a square without padding).
        intensity: ``"minmax"`` rescales each image to ``[0, intensity_scale]`` (robust to
            the caller's range: [0, 1], 0-255, z-scored MRI all work), ``"zscore"`` to zero
            mean / unit variance over the whole image, ``"none"`` trusts the caller.
        intensity_scale: upper end of the min-max range (1 for LiteMedSAM/SAM2, 255 for SAM).
        pixel_mean, pixel_std: per-channel normalisation applied after the intensity step.
        in_channels: channels the encoder wants; a single-channel input is repeated.
    """

    target_size: int
    spatial_dims: int = 2
    keep_aspect_ratio: bool = True
    intensity: IntensityMode = "minmax"
    intensity_scale: float = 1.0
    pixel_mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    pixel_std: tuple[float, ...] = (1.0, 1.0, 1.0)
    in_channels: int = 3

    def signature(self) -> str:
        """A string naming every setting that changes the encoder input (cache key part)."""
        return (
            f"size={self.target_size},dims={self.spatial_dims},aspect={self.keep_aspect_ratio},"
            f"int={self.intensity}:{self.intensity_scale},mean={self.pixel_mean},"
            f"std={self.pixel_std},ch={self.in_channels}"
        )

    # ------------------------------------------------------------------ geometry
    def resized_size(self, original_size: Sequence[int]) -> tuple[int, ...]:
        """Size of the image inside the model input, before padding."""
        if not self.keep_aspect_ratio:
            return (self.target_size,) * self.spatial_dims
        scale = self.target_size / max(original_size)
        return tuple(int(s * scale + 0.5) for s in original_size)

    def _scale(self, original_size: Sequence[int], input_size: Sequence[int]) -> torch.Tensor:
        return torch.tensor([i / o for i, o in zip(input_size, original_size)], dtype=torch.float32)

    def points_to_input(
        self, points: torch.Tensor, original_size: Sequence[int], input_size: Sequence[int], xy_order: bool
    ) -> torch.Tensor:
        """Scale point coordinates (last dim) from the caller's pixels to the model input.

        ``xy_order`` says the last dim lists coordinates fastest axis first (SAM's (x, y)),
        as opposed to array-index order (SAM-Med3D's (d, h, w)).
        """
        scale = self._scale(original_size, input_size).to(points.device)
        if xy_order:
            scale = scale.flip(0)
        return points.float() * scale

    # ------------------------------------------------------------------ images
    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"images must have shape (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W) "
                f"for a {self.spatial_dims}D model, got {tuple(images.shape)}"
            )
        if images.shape[1] not in (1, self.in_channels):
            raise ValueError(f"images must have 1 or {self.in_channels} channels, got {images.shape[1]}")

    def _normalise_intensity(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.ndim))
        if self.intensity == "minmax":
            low = x.amin(dim=dims, keepdim=True)
            high = x.amax(dim=dims, keepdim=True)
            x = (x - low) / (high - low).clamp_min(1e-8) * self.intensity_scale
        elif self.intensity == "zscore":
            x = (x - x.mean(dim=dims, keepdim=True)) / x.std(dim=dims, keepdim=True).clamp_min(1e-8)
        elif self.intensity != "none":
            raise ValueError(f"unknown intensity mode {self.intensity!r}")
        shape = (1, -1) + (1,) * self.spatial_dims
        mean = torch.tensor(self.pixel_mean[: x.shape[1]], dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.pixel_std[: x.shape[1]], dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def _resize(self, x: torch.Tensor, size: Sequence[int], antialias: bool) -> torch.Tensor:
        if tuple(x.shape[2:]) == tuple(size):
            return x
        if self.spatial_dims == 2:
            return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
        return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)

    def _pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        pad: list[int] = []
        for s in reversed(x.shape[2:]):
            pad += [0, self.target_size - s]
        return F.pad(x, pad, value=value) if any(pad) else x

    def images_to_input(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
        """Turn a caller batch into model input.

        Returns ``(x, original_size, input_size)``: the padded model input, the caller's
        spatial size and the size of the resized image inside the padded input.
        """
        self._check_images(images)
        x = images.float()
        if x.shape[1] == 1 and self.in_channels != 1:
            x = x.expand(-1, self.in_channels, *x.shape[2:])
        original_size = tuple(int(s) for s in x.shape[2:])
        input_size = self.resized_size(original_size)
        x = self._normalise_intensity(x)
        x = self._resize(x, input_size, antialias=True)  # as the PIL/torchvision resize SAM was trained with
        return self._pad(x).contiguous(), original_size, input_size

    # ------------------------------------------------------------------ masks and logits
    def mask_logits_to_prompt(
        self, mask_logits: torch.Tensor, input_size: Sequence[int], prompt_size: Sequence[int]
    ) -> torch.Tensor:
        """Map mask-prompt logits (N, 1, *caller spatial) into the model's mask-input frame."""
        x = self._resize(mask_logits.float(), input_size, antialias=True)
        x = self._pad(x, value=PAD_LOGIT)
        return self._resize(x, prompt_size, antialias=True)

    def logits_to_original(
        self, low_res_logits: torch.Tensor, original_size: Sequence[int], input_size: Sequence[int]
    ) -> torch.Tensor:
        """Undo the preprocessing on decoder logits (N, M, *low-res) -> (N, M, *original).

        Plain bilinear/trilinear interpolation, as SAM's and SAM2's own ``postprocess_masks``:
        upsample to the padded input, crop the padding, resize to the caller's size (without
        padding, SAM2 resizes the low-resolution logits straight to the caller's size).
        """
        x = low_res_logits
        if self.keep_aspect_ratio:
            x = self._resize(x, (self.target_size,) * self.spatial_dims, antialias=False)
            x = x[(Ellipsis,) + tuple(slice(0, s) for s in input_size)]
        return self._resize(x, original_size, antialias=False)
