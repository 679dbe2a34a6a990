"""Bundle-local code of the SemiSAM bundle (imported by MONAI as the top-level package ``scripts``).

The method itself lives in ``samssl`` (it is plug-and-play and shared with the other 3D bundles):
``samssl.losses.SAMAssistedConsistency`` (the SAM branch), ``samssl.engines.build_consistency_trainer``
(SupOnly / MT / UA-MT), ``samssl.data.transforms_3d`` (patches that remember where they came from).
"""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])
