"""Data layer: datalists of the community layouts, seeded splits, readers, checks and transforms.

Everything a bundle config needs is importable from here, e.g.
``"$samssl.data.prepare_split(@dataset_dir, @output_dir + '/datalist.json', num_labelled=8)"``
and ``"$samssl.data.dermoscopy_transforms('labelled', 256)"``.


"""


from samssl.data.case_failures import FAILED_CASE_KEY, SkipFailedCases, TolerantDataset
from samssl.data.checks import BinarizeLabeld, CheckSpatialShapesMatchd, EnsureChannelsd
from samssl.data.datalists import (
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    UnknownLayoutError,
    dermoscopy_datalist,
    describe_volume_folder,
    image_folder_datalist,
    isic_datalist,
    msd_datalist,
    msd_subset,
    nifti_datalist,
    ph2_datalist,
    dermoscopy_fold_folders,
    ph2_subset,
    uamt_h5_datalist,
    volume_datalist,
    write_msd_description,
)
from samssl.data.readability import Unreadable, check_readable, find_unreadable
from samssl.data.readers import UAMT_LA_SPACING, H5VolumeReader
from samssl.data.samplers import LabelledShareBatchSampler, labelled_per_batch
from samssl.data.save_predictions import PREDICTION_FORMATS, SavePredictiond
from samssl.data.sdf import SignedDistanceMap, SignedDistanceMapd, sdf_to_mask_probability, signed_distance_map
from samssl.data.splits import kfold_splits, load_datalist, prepare_split, split_labelled, write_datalist
from samssl.data.stitching import (
    SimplifiedStitch,
    StitchSlices,
    StitchSlicesd,
    grid_size,
    stitch_slices,
    unstitch_slices,
)
from samssl.data.transforms_2d import RandColorJitterd, dermoscopy_transforms
from samssl.data.transforms_3d import make_dataset, volume_transforms

__all__ = [
    "BinarizeLabeld",
    "CheckSpatialShapesMatchd",
    "EnsureChannelsd",
    "FAILED_CASE_KEY",
    "H5VolumeReader",
    "IMAGE_SUFFIXES",
    "LabelledShareBatchSampler",
    "PREDICTION_FORMATS",
    "RandColorJitterd",
    "SavePredictiond",
    "SignedDistanceMap",
    "SignedDistanceMapd",
    "SimplifiedStitch",
    "SkipFailedCases",
    "StitchSlices",
    "StitchSlicesd",
    "TolerantDataset",
    "UAMT_LA_SPACING",
    "UnknownLayoutError",
    "Unreadable",
    "VOLUME_SUFFIXES",
    "check_readable",
    "dermoscopy_datalist",
    "dermoscopy_transforms",
    "describe_volume_folder",
    "find_unreadable",
    "grid_size",
    "image_folder_datalist",
    "isic_datalist",
    "kfold_splits",
    "labelled_per_batch",
    "load_datalist",
    "make_dataset",
    "msd_datalist",
    "msd_subset",
    "nifti_datalist",
    "ph2_datalist",
    "dermoscopy_fold_folders",
    "ph2_subset",
    "prepare_split",
    "sdf_to_mask_probability",
    "signed_distance_map",
    "split_labelled",
    "stitch_slices",
    "uamt_h5_datalist",
    "unstitch_slices",
    "volume_datalist",
    "volume_transforms",
    "write_datalist",
    "write_msd_description",
]
