"""One training iteration of the dual-task SAM-distillation method (Huynh et al.), on the shared engine.

Networks and what trains them (one optimiser, one parameter group per network; the losses are
built so that each network gets gradients only from its own terms):

* **main network** (MobileNet U-Net, dual head; the only one deployed):
  labelled ``L_sup`` = Dice+CE(mask, label) + MSE(sdf, label SDF) + dual-task consistency;
  unlabelled, weighted by the ramp ``lambda(t)``: the teacher network's pseudo-targets (its
  arg-max mask by Dice+CE, its SDF by MSE) plus the consistency term (paper 2.1), and
  ``L_kd`` = T^2 KL(softmax(SAM/T) || softmax(main/T)) (paper eq. 2-3; SAM's logits detached).
* **teacher network** (SAM's ViT encoder + decoder, dual head): ``L_sup`` on labelled images.
* **SAM's prompt decoder psi and decoder adapters**: ``L_sam`` = Dice+CE(SAM output, label) on
  labelled images (paper eq. 1). SAM is prompted with the main network's fused mask+SDF prompt
  (and its mask's box) plus the dense prompt ``psi(Z)``; the prompt is detached, so ``L_sam``
  never trains the main network, and SAM's encoder is frozen (embeddings from the cache).

Frames: the main network sees a dihedral-augmented copy of each image and its outputs are mapped
back (``scripts/augment.py``), so SAM and a frozen-encoder teacher always read the un-augmented
image, whose embedding is computed once for the whole run.

Switches give the comparisons on the same code path: no unlabelled loader (SupOnly: main network,
labelled only), no SAM (main + teacher), full method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine

from samssl.engines import SemiSupervisedTrainer
from samssl.engines.precision import to_float32
from samssl.foundation import DensePromptDecoder, PromptableSegmenter
from samssl.foundation.base import ImageEmbeddings
from samssl.losses import (
    DualTaskLoss,
    KnowledgeDistillationLoss,
    as_class_logits,
    dice_ce_loss,
    dual_task_consistency_loss,
)
from samssl.networks.ema import unwrap_model
from scripts.augment import apply_dihedral, invert_dihedral, random_dihedral_codes
from scripts.fused_prompt import fused_prompts

Batch = dict[str, torch.Tensor]


class DualTaskSamKDTrainer(SemiSupervisedTrainer):
    """Dual-task co-training with SAM-guided distillation.

    Args (beyond :class:`SemiSupervisedTrainer`'s; ``network`` returns ``(logits, sdf)``, e.g.
    ``samssl.networks.DualTaskOutputs(main_net)``, and ``loss_function`` is the labelled
    :class:`~samssl.losses.DualTaskLoss` shared by both networks):
        teacher_network: the ViT dual-task teacher, or ``None`` (SupOnly).
        sam: the frozen promptable segmenter (with an embedding cache), or ``None`` (no SAM).
        prompt_decoder: psi, the dense prompt decoder (``None`` = no learned prompt).
        sam_parameters: the parameters ``L_sam`` trains (psi and the decoder adapters); their
            gradients are all-reduced by hand under ``torch.distributed`` (SAM is not wrapped in DDP).
        pseudo_label_loss: :class:`DualTaskLoss` of the main network against the teacher's mask
            and SDF on unlabelled images (its consistency term is the unlabelled consistency).
        consistency_weight: the ramp ``lambda(t)`` of every unlabelled term.
        kd_weight, kd_temperature: weight and temperature ``T`` of ``L_kd``.
        sam_loss_weight: weight of ``L_sam``.
        use_box_prompt: also prompt SAM with the box of the main network's mask (LiteMedSAM needs it).
        fused_alpha, fused_k: the fused prompt's region weight and SDF sharpness.
        augment: dihedral augmentation of the main network's (and a fine-tuned teacher's) input.
        sam_image_key, sdf_key: batch keys of the un-augmented image and of the label's SDF.
    """

    def __init__(
        self,
        *args: Any,
        teacher_network: torch.nn.Module | None = None,
        sam: PromptableSegmenter | None = None,
        prompt_decoder: DensePromptDecoder | None = None,
        sam_parameters: list[torch.nn.Parameter] | None = None,
        pseudo_label_loss: DualTaskLoss | None = None,
        kd_weight: float = 1.0,
        kd_temperature: float = 2.0,
        sam_loss_weight: float = 1.0,
        use_box_prompt: bool = True,
        fused_alpha: float = 0.5,
        fused_k: float = 20.0,
        augment: bool = True,
        sam_image_key: str = "sam_image",
        sdf_key: str = "label_sdf",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.loss_function, DualTaskLoss):
            raise TypeError("loss_function must be a samssl.losses.DualTaskLoss (mask + SDF + consistency)")
        if prompt_decoder is not None and sam is None:
            raise ValueError("a prompt decoder needs SAM")
        self.teacher_network = teacher_network
        self.sam = sam
        self.prompt_decoder = prompt_decoder
        self.sam_parameters = list(sam_parameters or [])
        self.pseudo_label_loss = pseudo_label_loss or DualTaskLoss()
        self.kd_loss = KnowledgeDistillationLoss(temperature=kd_temperature)
        self.sam_dice_ce = dice_ce_loss()
        self.kd_weight = kd_weight
        self.sam_loss_weight = sam_loss_weight
        self.use_box_prompt = use_box_prompt
        self.fused_alpha, self.fused_k = fused_alpha, fused_k
        self.augment = augment
        self.sam_image_key, self.sdf_key = sam_image_key, sdf_key
        if self.sam_parameters:
            from monai.engines.utils import IterationEvents

            self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._all_reduce_sam_gradients)

    # ------------------------------------------------------------------ forward passes
    def _codes(self, batch_size: int) -> torch.Tensor | None:
        return random_dihedral_codes(batch_size) if self.augment else None

    def _in_image_frame(self, network: Callable, image: torch.Tensor, codes: torch.Tensor | None,
                        **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``network`` on the augmented image and map ``(logits, sdf)`` back to the image's frame."""
        if codes is None:
            return network(image, **kwargs)
        logits, sdf = network(apply_dihedral(image, codes), **kwargs)
        return invert_dihedral(logits, codes), invert_dihedral(sdf, codes)

    def main_forward(self, image: torch.Tensor, codes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The main network's ``(logits, sdf)`` in the image's frame, autocast, returned in float32."""
        with self.autocast():
            return to_float32(self._in_image_frame(self.network, image, codes))

    def embedding_segmenter(self) -> PromptableSegmenter | None:
        """The frozen segmenter whose (cached) embeddings a step reads: SAM's, or a frozen-encoder
        teacher's; ``None`` when nothing reads embeddings (SupOnly, a fine-tuned teacher without SAM)."""
        if self.sam is not None:
            return self.sam
        if self.teacher_network is not None and unwrap_model(self.teacher_network).encoder is None:
            return unwrap_model(self.teacher_network).segmenter
        return None

    def embed(self, batch: Batch) -> ImageEmbeddings | None:
        """SAM's (cached, frozen) embedding of the un-augmented images, when anything needs it."""
        segmenter = self.embedding_segmenter()
        if segmenter is None:
            return None
        return segmenter.encode(batch.get(self.sam_image_key, batch["image"]))

    def teacher_forward(self, batch: Batch, codes: torch.Tensor | None,
                        embeddings: ImageEmbeddings | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's ``(logits, sdf)`` in the image's frame.

        With a frozen encoder it reads the cached embedding of the un-augmented image (an
        embedding cannot be flipped exactly); a fine-tuned encoder sees the main network's
        augmented view.
        """
        with self.autocast():
            if unwrap_model(self.teacher_network).encoder is None:
                assert embeddings is not None
                device = next(self.teacher_network.parameters()).device
                return to_float32(self.teacher_network(batch.get(self.sam_image_key, batch["image"]),
                                                       embeddings=embeddings.features.to(device)))
            return to_float32(self._in_image_frame(self.teacher_network, batch["image"], codes))

    def sam_forward(self, embeddings: ImageEmbeddings, logits: torch.Tensor,
                    sdf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's mask logits ``(B, 1, H, W)`` for the fused prompt of ``(logits, sdf)``, and ``valid`` (B,)."""
        assert self.sam is not None
        prompts = fused_prompts(logits, sdf, use_box=self.use_box_prompt, alpha=self.fused_alpha, k=self.fused_k)
        dense = None
        with self.autocast():
            if self.prompt_decoder is not None:
                dense = self.prompt_decoder(embeddings.features.to(self.sam.device))
            out = self.sam.decode(embeddings, dense_prompt=dense, **prompts.as_kwargs())
        return to_float32(out.mask_logits), prompts.valid[:, 0]

    # ------------------------------------------------------------------ losses
    def compute_losses(self, engine: Engine, labelled: Batch, unlabelled: Batch | None) -> dict[str, Any]:
        image, label, label_sdf = labelled["image"], labelled["label"], labelled.get(self.sdf_key)
        if label_sdf is None:
            raise KeyError(f"labelled batches need the label's SDF under {self.sdf_key!r} (SignedDistanceMapd)")
        codes = self._codes(image.shape[0])
        logits, sdf = self.main_forward(image, codes)
        sup = self.loss_function(logits, sdf, label, label_sdf)
        total = sup["loss"]
        terms: dict[str, Any] = {"supervised": sup["loss"], "sup_seg": sup["seg"], "sup_sdf": sup["sdf"],
                                 "sup_consistency": sup["consistency"]}

        embeddings = self.embed(labelled)
        if self.teacher_network is not None:
            t_logits, t_sdf = self.teacher_forward(labelled, codes, embeddings)
            teacher_sup = self.loss_function(t_logits, t_sdf, label, label_sdf)["loss"]
            total = total + teacher_sup
            terms["teacher_supervised"] = teacher_sup
        if self.sam is not None:
            assert embeddings is not None
            sam_logits, valid = self.sam_forward(embeddings, logits, sdf)
            if bool(valid.any()):
                sam_loss = self.sam_dice_ce(as_class_logits(sam_logits[valid]), label[valid])
            else:  # no foreground predicted anywhere yet: nothing to refine
                sam_loss = sam_logits.sum() * 0.0
            total = total + self.sam_loss_weight * sam_loss
            terms["sam"] = sam_loss

        if unlabelled is not None:
            weight = self.consistency_weight_at(engine.state.iteration)
            unsup, unsup_terms = self.unlabelled_losses(unlabelled)
            total = total + weight * unsup
            terms.update(unsup_terms)
            terms["unsupervised"] = unsup
            terms["consistency_weight"] = weight
        terms["loss"] = total
        return terms

    def unlabelled_losses(self, unlabelled: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """Teacher pseudo-targets + dual-task consistency + SAM distillation for the main network."""
        image = unlabelled["image"]
        logits, sdf = self.main_forward(image, self._codes(image.shape[0]))
        terms: dict[str, Any] = {}
        embeddings = self.embed(unlabelled)
        if self.teacher_network is not None:
            was_training = self.teacher_network.training
            self.teacher_network.eval()  # pseudo-targets from the teacher's inference behaviour
            with torch.no_grad():
                t_logits, t_sdf = self.teacher_forward(unlabelled, None, embeddings)
            self.teacher_network.train(was_training)
            pseudo = self.pseudo_label_loss(logits, sdf, t_logits.argmax(dim=1, keepdim=True), t_sdf)
            total = pseudo["loss"]
            terms.update(pseudo_seg=pseudo["seg"], pseudo_sdf=pseudo["sdf"], unsup_consistency=pseudo["consistency"])
        else:
            total = dual_task_consistency_loss(logits, sdf, self.pseudo_label_loss.k)
            terms["unsup_consistency"] = total
        if self.sam is not None:
            assert embeddings is not None
            with torch.no_grad():
                sam_logits, valid = self.sam_forward(embeddings, logits, sdf)
            kd = self.kd_loss(logits, sam_logits, mask=valid.to(logits.dtype)[:, None, None, None])
            total = total + self.kd_weight * kd
            terms["kd"] = kd
            terms["sam_prompt_valid"] = float(valid.float().mean())
        return total, terms

    # ------------------------------------------------------------------ distributed
    def _all_reduce_sam_gradients(self, engine: Engine) -> None:
        """Average the gradients of psi and the adapters over processes (they sit outside DDP)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size()
        for param in self.sam_parameters:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= world
