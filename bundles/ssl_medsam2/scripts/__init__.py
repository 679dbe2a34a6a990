"""Bundle-local code of the SSL-MedSAM2 bundle (imported by MONAI as the top-level package ``scripts``).

``scripts.tffs`` is the training-free few-shot branch (labelled volumes inserted into unlabelled
ones as video frames, paper Algorithm 2); ``scripts.fsl`` the iterative K-fold re-training with
its fold ensemble (``scripts.nnunet_backend``: the same rounds through the real nnU-Net);
``scripts.pipeline`` chains them as the bundle's ``training`` runs them; ``scripts.planned_unet``
plans the in-bundle network by nnU-Net's rules (``plan_dynunet``) and keeps the fold networks as
one deployed ``FoldEnsemble`` (both this method's own). What other bundles share lives in
``samssl``: the propagators (``samssl.foundation.propagation``), the pseudo-label writer
(``samssl.stages.pseudo_labels``) and the K-fold split (``samssl.data.kfold_splits``).
"""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])
