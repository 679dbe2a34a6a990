"""Array and dictionary transforms shared by the bundles."""

from .sdf import SignedDistanceMap, SignedDistanceMapd, sdf_to_mask_probability, signed_distance_map
from .stitching import SimplifiedStitch, StitchSlices, StitchSlicesd, grid_size, stitch_slices, unstitch_slices

__all__ = [
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
