"""Data pipelines of the bundle: the shared dermoscopy loading plus the SDF target and a SAM copy.

Each training entry is loaded and resized deterministically (``samssl.data.dermoscopy_transforms``
in its ``eval``/``infer`` mode, so ``CacheDataset`` caches it), then

* ``label_sdf``: the label's normalised signed distance map (``samssl.data``), the target
  of the SDF heads (labelled entries only);
* ``sam_image``: an untouched copy of the image, which SAM's frozen encoder embeds once per image
  for the whole run (the embedding cache is keyed by pixel content, so it must never change);
* ``image``: the main network's copy, colour-jittered here; the geometric augmentation is the
  exact dihedral one applied in the trainer (see ``scripts/augment.py``).
"""

from __future__ import annotations

from monai.transforms import Compose, CopyItemsd, EnsureTyped

from samssl.data import SignedDistanceMapd, dermoscopy_transforms
from samssl.data.transforms_2d import RandColorJitterd

__all__ = ["training_transforms"]


def training_transforms(labelled: bool, image_size: int = 256, colour_jitter: bool = True) -> Compose:
    """Pipeline for labelled (``image``, ``label``) or unlabelled (``image``) training entries."""
    base = dermoscopy_transforms("eval" if labelled else "infer", image_size=image_size)
    steps = list(base.transforms)
    if labelled:
        steps.append(SignedDistanceMapd("label", output_key="label_sdf"))
    steps.append(CopyItemsd("image", names="sam_image"))
    if colour_jitter:
        steps.append(RandColorJitterd("image", brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, prob=0.8))
    keys = ["image", "sam_image"] + (["label", "label_sdf"] if labelled else [])
    steps.append(EnsureTyped(keys, dtype=None, track_meta=False))
    return Compose(steps)
