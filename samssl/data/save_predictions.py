"""Write predictions on each input file's own grid and in its folder's naming, for anyone's metric code.

Training, evaluation and inference run on a working grid (dermoscopy images resized to the
network's size, volumes resampled to the training spacing), so the ``pred`` the metrics see is not
on the input's pixels or voxels. :class:`SavePredictiond` inverts the preprocessing on a copy of the
prediction (MONAI's ``Invertd`` replays the image's applied-operations trace backwards) and writes
it next to nothing else: ``<name>_<postfix>.png`` (0/255) for 2D images, ``<name>_<postfix>.nii.gz``
with the input's affine for volumes. The item passes through unchanged, so the same postprocessing
can both score on the working grid and save on the original one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.data.utils import create_file_basename
from monai.transforms import Compose, Invertd, MapTransform, SaveImaged

__all__ = ["PREDICTION_FORMATS", "SavePredictiond"]

# how each kind of input is written back: extension and the value the foreground class gets
PREDICTION_FORMATS: dict[str, dict[str, Any]] = {
    "png": {"output_ext": ".png", "scale": 255},       # ISIC/PH2 masks are 0/255 8-bit images
    "nifti": {"output_ext": ".nii.gz", "scale": None},  # label maps keep their class indices
}


class SavePredictiond(MapTransform):
    """Save ``keys`` (an argmax-ed label map) on the grid of ``orig_key``'s input file; return the item unchanged.

    Args:
        preprocessing: the (invertible) transform that produced ``orig_key`` from the file.
        output_dir: folder for the masks; ``None`` or ``""`` turns the transform into a no-op, so a
            config can list it unconditionally and switch it on with one key.
        file_format: ``"png"`` (2D, 0/255) or ``"nifti"`` (3D, input affine).
        output_postfix: file name suffix; ``"segmentation"`` gives the ISIC challenge naming
            (``ISIC_0000000_segmentation.png``).
        keys: the prediction key(s).
        orig_key: the preprocessed input whose trace is inverted.
    """

    def __init__(self, preprocessing: Compose | None, output_dir: str | None, file_format: str = "png",
                 output_postfix: str = "seg", keys: str | list[str] = "pred", orig_key: str = "image") -> None:
        super().__init__(keys)
        if file_format not in PREDICTION_FORMATS:
            raise ValueError(f"file_format must be one of {sorted(PREDICTION_FORMATS)}, got {file_format!r}")
        self.output_dir = str(output_dir) if output_dir else ""
        self.output_postfix = output_postfix
        fmt = PREDICTION_FORMATS[file_format]
        self.output_ext = fmt["output_ext"]
        if not self.output_dir:
            return
        if preprocessing is None:
            raise ValueError("SavePredictiond needs the preprocessing to invert when output_dir is set")
        self.invert = Invertd(keys=self.keys, transform=preprocessing, orig_keys=orig_key,
                              nearest_interp=True, to_tensor=True)
        self.save = SaveImaged(keys=self.keys, output_dir=self.output_dir, output_postfix=output_postfix,
                               output_ext=fmt["output_ext"], output_dtype=np.uint8, scale=fmt["scale"],
                               separate_folder=False, resample=False, print_log=False)

    def output_path(self, source_file: str | Path) -> Path:
        """Where the mask of the input file ``source_file`` is written (MONAI's naming, as used by the save)."""
        base = create_file_basename(self.output_postfix, str(source_file), self.output_dir,
                                    separate_folder=False, makedirs=False)
        return Path(base + self.output_ext)

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        if not self.output_dir:
            return data
        scratch = dict(data)
        for key in self.key_iterator(scratch):
            scratch[key] = scratch[key].clone()  # Invertd rewrites the prediction's trace and meta in place
        self.save(self.invert(scratch))
        return data
