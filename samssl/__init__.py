"""Shared library of the SAM-assisted semi-supervised segmentation bundles.

One obvious home for each concept: ``data`` (datalists, splits, transforms), ``engines``
(semi-supervised trainer, EMA teacher, ramps, checkpoints), ``losses``, ``transforms``
(signed distance map), ``metrics``, ``networks`` and ``demo`` (synthetic data).
"""

__version__ = "0.1.0"
