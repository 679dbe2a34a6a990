"""Data layer: datalists of the community layouts, seeded splits, readers, checks and transforms.

Everything a bundle config needs is importable from here, e.g.
``"$samssl.data.prepare_split(@dataset_dir, @output_dir + '/datalist.json', num_labelled=8)"``
and ``"$samssl.data.dermoscopy_transforms('labelled', 256)"``.
"""

from samssl.data.checks import BinarizeLabeld, CheckSpatialShapesMatchd, EnsureChannelsd
from samssl.data.datalists import (
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    UnknownLayoutError,
    dermoscopy_datalist,
    image_folder_datalist,
    isic_datalist,
    msd_datalist,
    nifti_datalist,
    ph2_datalist,
    uamt_h5_datalist,
    volume_datalist,
    msd_subset,
    ph2_subset,
    write_msd_description,
    describe_volume_folder,
)
from samssl.data.readers import UAMT_LA_SPACING, H5VolumeReader
from samssl.data.splits import kfold_splits, load_datalist, prepare_split, split_labelled, write_datalist
from samssl.data.transforms_2d import RandColorJitterd, dermoscopy_transforms
from samssl.data.transforms_3d import make_dataset, volume_transforms

__all__ = [
    "BinarizeLabeld",
    "CheckSpatialShapesMatchd",
    "EnsureChannelsd",
    "H5VolumeReader",
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
    "RandColorJitterd",
    "UAMT_LA_SPACING",
    "UnknownLayoutError",
    "dermoscopy_datalist",
    "dermoscopy_transforms",
    "image_folder_datalist",
    "isic_datalist",
    "kfold_splits",
    "load_datalist",
    "make_dataset",
    "msd_datalist",
    "nifti_datalist",
    "ph2_datalist",
    "prepare_split",
    "split_labelled",
    "uamt_h5_datalist",
    "volume_datalist",
    "volume_transforms",
    "write_datalist",
    "write_msd_description",
    "describe_volume_folder",
    "ph2_subset",
    "msd_subset",
]
