"""Array and dictionary transforms shared by the bundles."""

from .sdf import SignedDistanceMap, SignedDistanceMapd, sdf_to_mask_probability, signed_distance_map

__all__ = ["SignedDistanceMap", "SignedDistanceMapd", "sdf_to_mask_probability", "signed_distance_map"]
