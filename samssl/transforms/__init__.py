"""Array and dictionary transforms shared by the bundles."""

from samssl.transforms.save_predictions import PREDICTION_FORMATS, SavePredictiond
from samssl.transforms.sdf import SignedDistanceMap, SignedDistanceMapd, sdf_to_mask_probability, signed_distance_map
from samssl.transforms.stitching import SimplifiedStitch, StitchSlices, StitchSlicesd, grid_size, stitch_slices, unstitch_slices

__all__ = [
    "PREDICTION_FORMATS",
    "SavePredictiond",
    "SignedDistanceMap",
    "SignedDistanceMapd",
    "SimplifiedStitch",
    "StitchSlices",
    "StitchSlicesd",
    "grid_size",
    "sdf_to_mask_probability",
    "signed_distance_map",
    "stitch_slices",
    "unstitch_slices",
]
