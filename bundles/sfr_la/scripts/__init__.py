"""Bundle-local code of the SFR bundle (imported by MONAI as the top-level package ``scripts``).

``scripts.sfr`` runs SFR's stitching + fine-tuning + pseudo-labelling stages (and SFR+'s rounds).
What other bundles share lives in ``common``: the stitching transforms
(``common.transforms.stitching``), the stitched LoRA-tuned SAM (``common.networks.StitchedSAM``),
the pseudo-label writer and term (``common.engines.pseudo_labelling``, ``common.engines.pseudo_label``),
and the re-training frameworks (``common.engines.build_consistency_trainer``).
"""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])
