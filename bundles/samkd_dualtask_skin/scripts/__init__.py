"""Bundle-local code of the dual-task SAM-distillation bundle (imported by MONAI as the top-level package ``scripts``).

What this method alone uses lives here: its two networks (``scripts.mobilenet_unet``: the deployed
MobileNet main network; ``scripts.vit_dual_task``: the ViT teacher network), the fused mask + SDF
prompt (``scripts.fused_prompt``), the training iteration (``scripts.trainer``), its builders,
data pipelines, split and dihedral augmentation (``scripts.model``, ``scripts.transforms``,
``scripts.data``, ``scripts.augment``). What other bundles share, or a user would import on its
own, lives in ``samssl``: the dual-task head and losses (``samssl.networks.DualTaskHead``,
``samssl.losses.DualTaskLoss``), the SAM-encoder decoder (``samssl.networks.SAMEncoderDecoder``),
the dense prompt decoder (``samssl.foundation.DensePromptDecoder``), batch-norm folding and export
(``samssl.networks.fold_batch_norm``, ``export_torchscript``).
"""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])
