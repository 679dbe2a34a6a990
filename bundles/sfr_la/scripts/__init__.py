"""Bundle-local code of the SFR bundle (imported by MONAI as the top-level package ``scripts``).

``scripts.sfr`` runs SFR's stitching + fine-tuning + pseudo-labelling stages (and SFR+'s rounds);
``scripts.stitched_sam`` is SFR's fine-tuning module, the stitched LoRA-tuned SAM
(``StitchedSAM``), which this method alone uses. What other bundles share, or a user would import
on its own, lives in ``samssl``: the stitching transforms (``samssl.data.stitching``, a general
transform), LoRA (``samssl.foundation.peft_tuning``), the pseudo-label writer and term
(``samssl.stages.pseudo_labels``, ``samssl.engines.self_training``), and the re-training
frameworks (``samssl.engines.build_consistency_trainer``).
"""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])
