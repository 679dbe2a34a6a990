"""UAMT training step (Mu, Wei, Zhang, Algorithm 1) on the shared semi-supervised engine.

Each iteration draws a labelled and an unlabelled batch (the engine's two streams) and runs:

Stage 1 (dual-head mean teacher)
    The student's two heads (FCN ``S1``, DeepLabv3 ``S2``) predict labelled and unlabelled
    images; the EMA teacher predicts the unlabelled images and its arg-max is the pseudo-label.
    ``Ls`` = Dice+CE of both heads against the label (eq. 6);
    ``Lu`` = Dice+CE of both heads against the pseudo-label + Dice+CE between the heads (eq. 7);
    ``L = Ls + lambda * Lu`` (default) or ``lambda * Ls + (1 - lambda) * Lu`` (eq. 4 as printed);
    optimiser step; EMA update.

Stage 2 (uncertainty map)
    The uncertainty map is the entropy of the averaged teacher/student softmax (eq. 2-3); the
    most uncertain patches of each unlabelled image are replaced by trusted patches (see
    ``uncertainty.py``), and the new image is trained with the unlabelled weight of stage 1
    against the pseudo-label moved the same way; optimiser step; EMA update. Both stages share
    parameters.

The student sees the labelled and the unlabelled (stage 2: patch-mixed) images in one forward pass
(``joint_batch_norm``), so its BatchNorm statistics are those of both together while training, as
they are at test time; the paper's two calls are ``joint_batch_norm=False``.

``lambda`` follows the Gaussian ramp of eq. 5, ``lambda_m * exp(-5 (1 - t/m)^2)``. The default
(``loss_weighting="consistency_rampup"``) is the usual mean-teacher form ``Ls + lambda * Lu``:
the unlabelled term grows as the teacher becomes worth following. Eq. 4 read literally
(``loss_weighting="paper"``) instead *grows* the supervised weight from ``exp(-5)`` and fades the
unlabelled term out, so a freshly initialised teacher's pseudo-labels dominate the first half of
training; at the CPU scale it fell below SupOnly (bundle README, Results).

Switches reproduce the paper's ablations and baselines on the same network and schedule:
``aux_head`` (model built without the FCN head), ``uncertainty_mix`` (stage 2 on/off), and no
unlabelled loader at all (SupOnly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.losses import DiceCELoss

from samssl.engines.precision import to_float32
from samssl.engines.semi_supervised import SemiSupervisedTrainer
from scripts.uncertainty import mixture_entropy, uncertainty_guided_mix

LOSS_WEIGHTINGS = ("paper", "consistency_rampup")
HeadLogits = tuple[torch.Tensor, "torch.Tensor | None"]  # the student's (main, aux) logits; aux is None without the FCN head


class UAMTTrainer(SemiSupervisedTrainer):
    """Uncertainty-guided auxiliary mean teacher.

    Args (beyond :class:`SemiSupervisedTrainer`'s):
        loss_weight: ``lambda(iteration)``, e.g. ``GaussianRampUp(max_value=1.0, length=m)``.
        loss_weighting: ``"paper"`` (eq. 4) or ``"consistency_rampup"`` (``Ls + lambda Lu``).
        uncertainty_mix: run stage 2.
        grid_size, num_patches: the patch grid and K of the uncertainty-guided exchange.
        joint_batch_norm: run the student on the labelled and the unlabelled (or patch-mixed)
            images in one forward pass, so its BatchNorm layers normalise every image with the
            statistics of both together, as the reference mean-teacher codes and MixMatch/FixMatch
            do (default). Separately (``False``, two calls as Algorithm 1 writes them) the labelled images are
            normalised among themselves while training, but at test time with running statistics
            averaged over labelled, unlabelled and mixed batches: a mismatch that grows when the
            few labelled images differ from the pool (bundle README, "Across test folders").
    """

    def __init__(
        self,
        *args: Any,
        loss_weight: Callable[[int], float],
        loss_weighting: str = "consistency_rampup",
        uncertainty_mix: bool = True,
        grid_size: int = 4,
        num_patches: int = 4,
        joint_batch_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        kwargs.setdefault("loss_function", DiceCELoss(to_onehot_y=True, softmax=True))
        super().__init__(*args, **kwargs)
        self.loss_weight = loss_weight
        self.loss_weighting = loss_weighting
        self.uncertainty_mix = uncertainty_mix
        self.grid_size = grid_size
        self.num_patches = num_patches
        self.joint_batch_norm = joint_batch_norm

    # -- loss terms -------------------------------------------------------------------------
    def _dice_ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_function(logits, target)

    def labelled_loss(self, main: torch.Tensor, aux: torch.Tensor | None, label: torch.Tensor) -> torch.Tensor:
        """Eq. 6: Dice+CE of each head against the label."""
        loss = self._dice_ce(main, label)
        if aux is not None:
            loss = loss + self._dice_ce(aux, label)
        return loss

    def unlabelled_loss(self, main: torch.Tensor, aux: torch.Tensor | None, pseudo: torch.Tensor) -> torch.Tensor:
        """Eq. 7: both heads against the teacher's pseudo-label, plus head-to-head Dice+CE.

        The head-to-head term is symmetric: each head learns from the other's (detached)
        arg-max, so neither head is only a follower.
        """
        loss = self._dice_ce(main, pseudo)
        if aux is not None:
            loss = loss + self._dice_ce(aux, pseudo)
            main_hard = main.detach().argmax(dim=1, keepdim=True)
            aux_hard = aux.detach().argmax(dim=1, keepdim=True)
            loss = loss + 0.5 * (self._dice_ce(aux, main_hard) + self._dice_ce(main, aux_hard))
        return loss

    @staticmethod
    def _foreground(logits_or_labels: torch.Tensor) -> float:
        """Share of foreground pixels: of arg-max class logits ``(B, C, H, W)`` or of labels ``(B, 1, H, W)``."""
        with torch.no_grad():
            classes = logits_or_labels.argmax(dim=1) if logits_or_labels.shape[1] > 1 else logits_or_labels[:, 0]
            return float((classes > 0).float().mean())

    def _student(self, *batches: torch.Tensor) -> list[HeadLogits]:
        """The student's ``(main, aux)`` logits on each batch, in order.

        With ``joint_batch_norm`` the batches go through one forward pass (one set of batch
        statistics) and the outputs are split back; otherwise one pass per batch.
        """
        if not self.joint_batch_norm:
            return [to_float32(self.network(images, return_aux=True)) for images in batches]
        sizes = [images.shape[0] for images in batches]
        main, aux = to_float32(self.network(torch.cat(batches), return_aux=True))
        auxes = aux.split(sizes) if aux is not None else [None] * len(batches)
        return list(zip(main.split(sizes), auxes))

    def _combine(self, supervised: torch.Tensor | float, unsupervised: torch.Tensor, lam: float) -> torch.Tensor:
        if self.loss_weighting == "paper":
            return lam * supervised + (1.0 - lam) * unsupervised
        return supervised + lam * unsupervised

    # -- one iteration ----------------------------------------------------------------------
    def train_step(self, engine: Any, labelled: dict[str, torch.Tensor], unlabelled: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        iteration = engine.state.iteration
        image, label = labelled["image"], labelled["label"]

        if unlabelled is None:  # SupOnly baseline: labelled data only, no ramp
            with self.autocast():
                main, aux = to_float32(self.network(image, return_aux=True))
                supervised = self.labelled_loss(main, aux, label)
            self.optimize(engine, supervised, terms={"supervised": supervised})
            return {"loss": supervised, "supervised": supervised, "label_foreground": self._foreground(label),
                    "prediction_foreground": self._foreground(main.detach())}

        lam = float(self.loss_weight(iteration))
        unlabelled_image = unlabelled["image"]
        with torch.no_grad(), self.autocast():  # the EMA teacher normalises as it was built to (``batch_norm``)
            teacher_logits = to_float32(self.teacher(unlabelled_image))
        pseudo = teacher_logits.argmax(dim=1, keepdim=True)

        # Stage 1: dual-head mean teacher on the labelled and unlabelled batches.
        with self.autocast():
            (main_l, aux_l), (main_u, aux_u) = self._student(image, unlabelled_image)
            supervised = self.labelled_loss(main_l, aux_l, label)
            unsupervised = self.unlabelled_loss(main_u, aux_u, pseudo)
            stage1 = self._combine(supervised, unsupervised, lam)
        self.optimize(engine, stage1, terms={"supervised": supervised, "unsupervised": unsupervised})
        self.teacher.update(iteration)
        # what the run's foreground balance looks like (written by samssl.handlers.TrainingTrace): the labels',
        # the student's on the same labelled images, the teacher's pseudo-labels and the student's on unlabelled ones
        output: dict[str, Any] = {"loss": stage1, "supervised": supervised, "unsupervised": unsupervised, "lambda": lam,
                                  "label_foreground": self._foreground(label),
                                  "prediction_foreground": self._foreground(main_l.detach()),
                                  "pseudo_foreground": self._foreground(pseudo),
                                  "unlabelled_prediction_foreground": self._foreground(main_u.detach())}

        # Stage 2: train on images whose uncertain patches were replaced by trusted ones.
        if self.uncertainty_mix:
            uncertainty = mixture_entropy(main_u.detach().float(), teacher_logits.float())
            mixed_image, mixed_pseudo = uncertainty_guided_mix(
                unlabelled_image, pseudo, uncertainty, grid_size=self.grid_size, num_patches=self.num_patches
            )
            with self.autocast():
                # normalised beside the labelled images as in stage 1 (their outputs unused), or alone
                beside = (image,) if self.joint_batch_norm else ()
                main_m, aux_m = self._student(*beside, mixed_image)[-1]
                mixed = self.unlabelled_loss(main_m, aux_m, mixed_pseudo)
                stage2 = self._combine(0.0, mixed, lam)
            self.optimize(engine, stage2, terms={"unsupervised_mixed": mixed})
            self.teacher.update(iteration)
            output["unsupervised_mixed"] = mixed
            output["mixed_pseudo_foreground"] = self._foreground(mixed_pseudo)  # after the patch replacement
            output["loss"] = stage1.detach() + stage2.detach()
        return output
