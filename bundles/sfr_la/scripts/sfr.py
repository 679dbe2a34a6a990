"""SFR's stages (stitch + fine-tune, pseudo-label, SFR+ routing), run before the 3D re-training.

``train.json`` lists the paper's steps in order: ``"stages": [@sfr_stages, re-training]``, run by
:func:`samssl.stages.run_stages` after the config is resolved. :class:`SFRStages` runs steps 1-3
round by round, each as a :class:`samssl.stages.Stage` (a folder with a ``stage.json`` manifest,
done when the manifest says so, computed by process 0 while other processes wait). Per round
``r`` (``<work_dir>/round<r>/``, by default ``runs/<run>/sfr``):

1. **Fine-tune** (``finetune/``): a :class:`~scripts.stitched_sam.StitchedSAM` (LoRA on the image
   encoder's q/v, SAMed class-token decoder) trained on random 3D patches of the fine-tuning set,
   stitched into one 2D image each; Dice + CE on the unstitched logits (SAMed: 0.8 Dice + 0.2 CE).
   Resumable (checkpoints every ``checkpoint_interval`` iterations); the tuned weights (LoRA +
   decoder only) end in ``sam_tuned.pt``.
2. **Pseudo-label** (``pseudo_labels/``): the tuned SAM (LoRA merged) segments every unlabelled
   volume with a sliding window of stitched patches; argmax masks are written on each volume's
   own grid, with SFR eq. 8's voxel-average confidence. Cached case by case.
3. **Route** (``routing/``, SFR+): cases with confidence ``>= threshold`` (0.985) join the next
   round's fine-tuning set, their pseudo-label standing in for a label; the others stay with the
   re-training. ``rounds=1`` is plain SFR. When no case reaches the threshold the rounds stop
   there: the next one would fine-tune on the same volumes with the same seed.

The re-training (step 4) takes the last round's pseudo-labels (``retrain_on="all"`` unlabelled
cases, or only the last routing's ``"uncertain"`` ones) through :meth:`SFRStages.entries`, read by
the unlabelled stream's :class:`~samssl.stages.DeferredDataset` on its first batch. Only ``image``
paths of unlabelled entries are read (the ``infer`` transforms load no label).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from samssl.data import volume_transforms
from samssl.engines.patch_training import train_on_volume_patches
from samssl.foundation.base import PromptableSegmenter
from samssl.losses import dice_ce_loss
from samssl.stages import FunctionStage
from samssl.stages.pseudo_labels import (
    route_by_confidence,
    warn_if_confidence_tracks_background,
    write_pseudo_labels,
)
from samssl.stages.teacher_tuning import labelled_provenance
from samssl.utils.config_checks import SettingsDict
from samssl.utils.files import file_sha256

from .stitched_sam import StitchedSAM

__all__ = ["FineTuneSettings", "SFRStages", "load_tuned_sam"]

TUNED_FILE = "sam_tuned.pt"


class FineTuneSettings(SettingsDict):
    """The fine-tuning module's settings (a dict, so configs write them as one JSON object).

    Keys: ``num_iterations``, ``batch_size``, ``learning_rate``, ``weight_decay``, ``lora_rank``,
    ``dice_weight``, ``ce_weight``, ``checkpoint_interval``, ``sw_batch_size``, ``sw_overlap``.
    """

    WHAT = "fine-tuning settings"
    DEFAULTS: Mapping[str, Any] = {
        "num_iterations": 1000, "batch_size": 2, "learning_rate": 0.001, "weight_decay": 0.1, "lora_rank": 4,
        "dice_weight": 0.8, "ce_weight": 0.2, "checkpoint_interval": 100, "sw_batch_size": 1, "sw_overlap": 0.25,
    }


class SFRStages:
    """Stitching + fine-tuning + pseudo-labelling (+ SFR+ routing), over ``rounds``, as stages.

    Args:
        build_sam: ``() -> PromptableSegmenter``: a fresh 2D SAM (LiteMedSAM by default) per use.
        labelled, unlabelled: datalist entries (``image`` + ``label``; ``image`` only is read of unlabelled).
        work_dir: folder of the rounds (``round<r>/finetune``, ``round<r>/pseudo_labels``, ``round<r>/routing``).
        patch_size, target_spacing: the 3D patches SAM is tuned on and the voxel size (as the re-training's).
        finetune: :class:`FineTuneSettings` values.
        rounds: 1 = SFR; more = SFR+ with confidence routing between rounds.
        confidence_threshold: SFR+'s tau (paper: 0.985).
        retrain_on: ``"all"`` unlabelled cases or the last routing's ``"uncertain"`` ones.
        num_classes: classes, background included.
        simplified_tile: the paper's "simplified" stitching with tiles of this size (96), or None.
        device, seed: where to run; the seed of the fine-tuning patches.
        teacher_identity: names the base SAM and its weights (e.g. ``"litemedsam"`` or a checkpoint
            path) in the fine-tuning stage's inputs, so a folder tuned from another SAM is not reused.
        rank: this process's rank (default: ``RANK`` of a ``torchrun`` launch); only rank 0 computes.
    """

    def __init__(
        self,
        build_sam: Callable[[], PromptableSegmenter],
        labelled: Sequence[Mapping[str, Any]],
        unlabelled: Sequence[Mapping[str, Any]],
        work_dir: str | Path,
        patch_size: Sequence[int],
        target_spacing: float | None,
        finetune: Mapping[str, Any] | None = None,
        rounds: int = 1,
        confidence_threshold: float = 0.985,
        retrain_on: str = "all",
        num_classes: int = 2,
        simplified_tile: int | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        teacher_identity: str = "",
        rank: int | None = None,
    ) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1 (1 = SFR, more = SFR+), got {rounds}")
        if retrain_on not in ("all", "uncertain"):
            raise ValueError(f"retrain_on must be 'all' or 'uncertain', got {retrain_on!r}")
        if not labelled:
            raise ValueError("SFR fine-tunes SAM on labelled volumes: the labelled list is empty")
        if not unlabelled:
            raise ValueError("SFR pseudo-labels unlabelled volumes: the unlabelled list is empty "
                             "(lower num_labelled, or train the SupOnly baseline)")
        self.build_sam = build_sam
        self.labelled = [dict(e) for e in labelled]
        self.unlabelled = [{"image": str(e["image"])} for e in unlabelled]  # nothing else is carried
        self.root = Path(work_dir)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.target_spacing = target_spacing
        self.settings = FineTuneSettings(finetune)
        self.rounds = int(rounds)
        self.threshold = float(confidence_threshold)
        self.retrain_on = retrain_on
        self.num_classes = int(num_classes)
        self.simplified_tile = simplified_tile
        self.device = torch.device(device)
        self.seed = int(seed)
        self.teacher_identity = str(teacher_identity)
        self.rank = rank
        self._entries: list[dict[str, Any]] | None = None  # run() once per process
        self._final_round = self.rounds - 1  # earlier when SFR+ routes no case back (set by run())

    # ------------------------------------------------------------------ step 1
    def finetune(self, round_dir: Path, training_set: Sequence[Mapping[str, Any]]) -> Path:
        """Fine-tune a fresh StitchedSAM on ``training_set`` (a stage); its ``sam_tuned.pt``."""
        provenance = labelled_provenance(training_set)  # paths and content fingerprints
        training_set = [{"image": str(e["image"]), "label": str(e["label"])} for e in training_set]
        inputs = {"base_sam": self.teacher_identity, "training_set": provenance, "settings": dict(self.settings),
                  "patch": list(self.patch_size), "spacing": self.target_spacing,
                  "simplified_tile": self.simplified_tile, "seed": self.seed}
        stage = FunctionStage(f"fine-tune ({round_dir.name})", round_dir / "finetune", lambda: inputs,
                              lambda out: {"tuned": str(self._train(out, training_set, provenance))}, rank=self.rank)
        return Path(stage.run()["tuned"])

    def _train(self, out_dir: Path, training_set: Sequence[Mapping[str, Any]],
               provenance: Sequence[Mapping[str, Any]] = ()) -> Path:
        tuned = out_dir / TUNED_FILE
        if tuned.exists():  # finished before the stage's manifest was written (or by an earlier version)
            return tuned
        s = self.settings
        model = StitchedSAM(self.build_sam(), self.num_classes, lora_rank=int(s["lora_rank"]),
                            simplified_tile=self.simplified_tile).to(self.device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=float(s["learning_rate"]), weight_decay=float(s["weight_decay"]))
        iterations = int(s["num_iterations"])
        print(f"fine-tuning {model.teacher.name} with LoRA rank {s['lora_rank']} on {len(training_set)} stitched "
              f"volumes, {iterations} iterations -> {tuned}", flush=True)
        train_on_volume_patches(model, optimizer, dice_ce_loss(lambda_dice=float(s["dice_weight"]),
                                                                lambda_ce=float(s["ce_weight"])),
                                training_set, self.patch_size, self.target_spacing, iterations, int(s["batch_size"]),
                                out_dir / "checkpoints", int(s["checkpoint_interval"]), self.seed, self.device)
        return model.save_tuned(tuned, provenance, dict(s))

    def load_tuned(self, tuned: Path) -> StitchedSAM:
        model = StitchedSAM.load_tuned(self.build_sam(), tuned, simplified_tile=self.simplified_tile)
        return model.merge().to(self.device).eval()

    # ------------------------------------------------------------------ step 2
    def inferer(self) -> SlidingWindowInferer:
        return SlidingWindowInferer(roi_size=self.patch_size, sw_batch_size=int(self.settings["sw_batch_size"]),
                                    overlap=float(self.settings["sw_overlap"]))

    def pseudo_label(self, round_dir: Path, tuned: Path) -> list[dict[str, Any]]:
        """Pseudo-label every unlabelled volume with the tuned SAM (a stage); one record per case."""
        settings = {"sam": file_sha256(tuned)[:16], "spacing": self.target_spacing,
                    "simplified_tile": self.simplified_tile, "patch": self.patch_size,
                    "overlap": self.settings["sw_overlap"]}
        case_fingerprint = json.dumps(settings, sort_keys=True)  # the per-case cache's key, as before stages

        def compute(out_dir: Path) -> dict[str, Any]:
            records = write_pseudo_labels(self.load_tuned(tuned), self.unlabelled,
                                          volume_transforms("infer", target_spacing=self.target_spacing),
                                          self.inferer(), out_dir, case_fingerprint, device=self.device)
            return {"records": records}

        stage = FunctionStage(f"pseudo-label ({round_dir.name})", round_dir / "pseudo_labels",
                              lambda: {**settings, "unlabelled": [e["image"] for e in self.unlabelled]}, compute,
                              rank=self.rank)
        return stage.run()["records"]

    # ------------------------------------------------------------------ step 3
    def route(self, round_dir: Path, records: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """SFR+ eq. 8 routing of one round's records (a stage): ``{"confident": [...], "uncertain": [...]}``."""
        def compute(out_dir: Path) -> dict[str, Any]:
            confident, uncertain = route_by_confidence(records, self.threshold)
            (out_dir / "routing.json").write_text(json.dumps({
                "threshold": self.threshold, "confident": [c["image"] for c in confident],
                "uncertain": [c["image"] for c in uncertain]}, indent=1))
            return {"confident": confident, "uncertain": uncertain}

        stage = FunctionStage(f"route ({round_dir.name})", round_dir / "routing",
                              lambda: {"threshold": self.threshold, "records": list(records)}, compute, rank=self.rank)
        return stage.run()

    def final_model(self) -> StitchedSAM:
        """The last round's fine-tuned SAM (running every stage that has not run yet).

        The last round is ``rounds - 1`` unless SFR+ stopped early (no case reached the threshold).
        """
        self.run()
        return self.load_tuned(self.root / f"round{self._final_round}" / "finetune" / TUNED_FILE)

    # ------------------------------------------------------------------ all rounds
    def run(self) -> list[dict[str, Any]]:
        """Every round's stages; the unlabelled entries for re-training, each with its ``pseudo_label`` path.

        The result is kept: a config that needs it twice (the re-training's data and the SAM-alone
        evaluator) does not read the manifests again.
        """
        if self._entries is not None:
            return list(self._entries)
        training_set: list[dict[str, Any]] = list(self.labelled)
        records: list[dict[str, Any]] = []
        routing: dict[str, list[dict[str, Any]]] = {}
        for r in range(self.rounds):
            round_dir = self.root / f"round{r}"
            tuned = self.finetune(round_dir, training_set)
            records = self.pseudo_label(round_dir, tuned)
            routing = self.route(round_dir, records)
            confident, uncertain = routing["confident"], routing["uncertain"]
            print(f"round {r}: {len(confident)} confident (>= {self.threshold}), {len(uncertain)} uncertain", flush=True)
            if r + 1 < self.rounds or (self.retrain_on == "uncertain" and self.rounds > 1):  # the routing is used
                warn_if_confidence_tracks_background(confident, uncertain)
            self._final_round = r
            if r + 1 < self.rounds:
                if not confident:
                    # the next round would fine-tune on the same labelled volumes with the same seed: it
                    # would repeat this one (an hour on a CPU) for nothing; SFR+ is SFR here
                    print(f"round {r}: no case reached the threshold, so round {r + 1} would repeat this round: "
                          f"SFR+ stops after round {r}", flush=True)
                    break
                training_set = list(self.labelled) + [{"image": c["image"], "label": c["pseudo_label"]} for c in confident]
        if self.retrain_on == "uncertain" and self.rounds > 1:
            keep = {c["image"] for c in routing["uncertain"]}
            records = [r for r in records if r["image"] in keep]
            if not records:
                raise ValueError(f"every unlabelled case passed the confidence threshold {self.threshold}: nothing "
                                 "is left for re-training with retrain_on='uncertain'; use retrain_on='all'")
        self._entries = [{"image": r["image"], "pseudo_label": r["pseudo_label"]} for r in records]
        return list(self._entries)

    def entries(self) -> list[dict[str, Any]]:
        """The re-training's unlabelled entries (runs the stages first if they have not run)."""
        return self.run()


def load_tuned_sam(teacher_name: str, checkpoint: str | None, tuned: str | Path,
                   device: torch.device | str = "cpu", simplified_tile: int | None = None) -> StitchedSAM:
    """The fine-tuned stitched SAM of a run (``sam_tuned.pt``) on its base model, LoRA merged, for evaluation."""
    from samssl.foundation import build_foundation_model

    tuned = Path(tuned)
    if not tuned.exists():
        raise FileNotFoundError(f"no fine-tuned SAM at {tuned}: train with sfr#enabled first, or pass --tuned_sam <file>")
    teacher = build_foundation_model(teacher_name, checkpoint=checkpoint, device=device)
    return StitchedSAM.load_tuned(teacher, tuned, simplified_tile=simplified_tile).merge().to(device).eval()
