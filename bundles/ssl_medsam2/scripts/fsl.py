"""FSL: iterative K-fold re-training on labelled + pseudo-labelled volumes (SSL-MedSAM2, Algorithm 1).

Round ``r`` (``<work_dir>/round<r>/``) splits the unlabelled cases into ``K`` folds
(:func:`samssl.data.kfold_splits`, seeded). Fold ``k`` trains a fresh network on the labelled
cases plus the other folds' unlabelled cases with their current pseudo-labels, and re-predicts
its held-out fold; the K held-out predictions become the next round's pseudo-labels (so no case
is ever re-labelled by a network that saw its own pseudo-label). After the last round the K
fold networks are kept as one :class:`~scripts.planned_unet.FoldEnsemble`, which
averages their probabilities at inference (nnU-Net's fold ensemble).

Each fold of each round is a :class:`samssl.stages.Stage` (``round<r>/fold<k>/stage.json``): a
finished fold is not trained again, an interrupted one resumes from its last checkpoint, held-out
predictions are cached under the fold model's hash (``round<r>/fold<k>/held_out_pseudo_labels``),
and with several processes each fold has an owner rank that computes it while the others wait
for its manifest.

Beyond the paper, the rounds are guarded against collapsing onto weak pseudo-labels
(:mod:`scripts.fsl_guards`, ``fsl#guards``): a labelled floor in every batch, implausible
pseudo-labels left out of a round's training (recorded in the fold's ``stage.json`` inputs and in
``round<r>/round.json``), and a stop when the rounds' agreement drops, deploying the previous
round's folds (``round<r>/round.json`` holds the agreements and the decision).
``fsl#guards: false`` runs the plain Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from samssl.data import kfold_splits, volume_transforms
from samssl.engines.patch_training import train_on_volume_patches
from samssl.engines.precision import AmpSetting, resolve_precision
from samssl.handlers.checkpoints import AtomicDiskSaver, load_network_weights
from samssl.losses import dice_ce_loss
from samssl.stages import FunctionStage
from samssl.stages.pseudo_labels import write_pseudo_labels
from samssl.utils.config_checks import SettingsDict
from samssl.utils.files import file_sha256

from .fsl_guards import FSLGuards, RoundGuard
from .planned_unet import FoldEnsemble

__all__ = ["FoldRetraining", "FoldTrainingSettings", "precision_inputs", "train_network"]

MODEL_FILE = "model.pt"
HELD_OUT = "held_out_pseudo_labels"


class FoldTrainingSettings(SettingsDict):
    """One fold's supervised training (a dict, so configs write it as one JSON object).

    Keys: ``num_iterations``, ``batch_size``, ``learning_rate``, ``momentum``, ``weight_decay``,
    ``checkpoint_interval``, ``sw_batch_size``, ``sw_overlap``. nnU-Net's optimiser: SGD with
    Nesterov momentum 0.99, lr 0.01 with the poly decay (1 - t/T)^0.9, Dice + CE.
    """

    WHAT = "fold training settings"
    DEFAULTS: Mapping[str, Any] = {
        "num_iterations": 250_000, "batch_size": 2, "learning_rate": 0.01, "momentum": 0.99, "weight_decay": 3e-5,
        "checkpoint_interval": 250, "sw_batch_size": 1, "sw_overlap": 0.5,
    }


def train_network(build_network: Callable[[], nn.Module], training_set: Sequence[Mapping[str, Any]], out_dir: Path,
                  patch_size: Sequence[int], target_spacing: float | None, settings: Mapping[str, Any] | None = None,
                  seed: int = 0, device: torch.device | str = "cpu", num_labelled: int | None = None,
                  labelled_share: float = 0.0, amp: AmpSetting = False) -> Path:
    """Supervised training of a fresh network on ``training_set`` (image + label); ``out_dir/model.pt``.

    nnU-Net's recipe (:class:`FoldTrainingSettings`) on random patches. Returns at once if the
    model file exists; resumes from ``out_dir/checkpoints`` after a kill. The first
    ``num_labelled`` entries are the labelled ones; ``labelled_share`` > 0 keeps that floor of
    labelled patches in every batch when pseudo-labelled entries follow them (SupOnly: unchanged).
    ``amp``: the bundle's precision switch (:mod:`samssl.engines.precision`; bfloat16 on CPUs that have it).
    """
    out_dir = Path(out_dir)
    model_file = out_dir / MODEL_FILE
    if model_file.exists():
        return model_file
    if not training_set:
        raise ValueError(f"nothing to train {out_dir} on: the training set is empty")
    s = FoldTrainingSettings(settings)
    network = build_network().to(device)
    iterations = int(s["num_iterations"])
    optimizer = torch.optim.SGD(network.parameters(), lr=float(s["learning_rate"]), momentum=float(s["momentum"]),
                                nesterov=True, weight_decay=float(s["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=iterations, power=0.9)
    print(f"training {out_dir.parent.name}/{out_dir.name} on {len(training_set)} volumes, {iterations} iterations "
          f"-> {model_file}", flush=True)
    train_on_volume_patches(network, optimizer, dice_ce_loss(lambda_dice=1.0, lambda_ce=1.0), training_set,
                            patch_size, target_spacing, iterations, int(s["batch_size"]), out_dir / "checkpoints",
                            int(s["checkpoint_interval"]), seed, device, lr_scheduler=scheduler,
                            amp=amp, num_labelled=num_labelled, labelled_share=labelled_share)
    AtomicDiskSaver(out_dir, filename=MODEL_FILE)(network.state_dict(), MODEL_FILE)
    return model_file


def precision_inputs(amp: AmpSetting, device: torch.device | str) -> dict[str, str]:
    """What a network's training precision adds to its stage's inputs: nothing for float32 (so a float32
    stage keeps the fingerprint it had before the switch existed), ``{"precision": name}`` otherwise."""
    name = resolve_precision(amp, device).name
    return {} if name == "fp32" else {"precision": name}


class FoldRetraining:
    """Algorithm 1's refinement loop over ``rounds`` x ``num_folds`` trainings.

    Args:
        build_network: ``() -> nn.Module`` a fresh network (the planned DynUNet) per fold.
        labelled: entries with ``image`` and ``label``.
        pseudo_labelled: the unlabelled entries with their initial (TFFS) ``pseudo_label``; only
            ``image`` and ``pseudo_label`` are read.
        work_dir: folder of the rounds.
        patch_size, target_spacing: training patches and voxel size.
        training: :class:`FoldTrainingSettings` values.
        num_folds, rounds: K (paper: 5) and the number of refinement rounds (paper: 3 for GED4).
        seed: seed of the fold assignment and the data order.
        rank, world_size: with several processes (``multi_gpu_train.json``), process ``rank`` trains
            and re-predicts the folds ``k`` with ``k % world_size == rank`` (nnU-Net's "one fold per
            GPU") and waits for the others' fold manifests before the next round.
        guards: :class:`~scripts.fsl_guards.FSLGuards` values, ``True`` (the defaults) or ``False``
            (the paper's plain Algorithm 1). With the stopping rule, ``rounds`` is the most rounds run.
        amp: the precision of the folds' training (:mod:`samssl.engines.precision`); a mixed precision
            enters each fold's fingerprint, so a float32 fold is never taken for a bfloat16 one.
    """

    def __init__(self, build_network: Callable[[], nn.Module], labelled: Sequence[Mapping[str, Any]],
                 pseudo_labelled: Sequence[Mapping[str, Any]], work_dir: str | Path, patch_size: Sequence[int],
                 target_spacing: float | None, training: Mapping[str, Any] | None = None, num_folds: int = 5,
                 rounds: int = 3, seed: int = 0, device: torch.device | str = "cpu", rank: int = 0,
                 world_size: int = 1, guards: bool | Mapping[str, Any] | None = None,
                 amp: AmpSetting = False) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size} processes")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if not pseudo_labelled:
            raise ValueError("FSL re-trains on pseudo-labelled cases: the unlabelled list is empty")
        if not 2 <= num_folds <= len(pseudo_labelled):
            raise ValueError(f"num_folds must be between 2 and the number of unlabelled cases "
                             f"({len(pseudo_labelled)}), got {num_folds}")
        missing = [e["image"] for e in pseudo_labelled if "pseudo_label" not in e]
        if missing:
            raise ValueError(f"unlabelled cases without a pseudo_label (run TFFS first): {missing[:3]}")
        self.build_network = build_network
        self.labelled = [{"image": str(e["image"]), "label": str(e["label"])} for e in labelled]
        self.initial = {str(e["image"]): str(e["pseudo_label"]) for e in pseudo_labelled}
        self.root = Path(work_dir)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.target_spacing = target_spacing
        self.settings = FoldTrainingSettings(training)
        self.num_folds = int(num_folds)
        self.rounds = int(rounds)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        self.guards = FSLGuards.resolve(guards)
        self.round_guard = RoundGuard(self.guards, [e["label"] for e in self.labelled], write=self.rank == 0)
        self.amp = amp

    @property
    def agreements(self) -> list[float | None]:
        """The agreement of each round run so far (:mod:`scripts.fsl_guards`)."""
        return list(self.round_guard.agreements)

    @property
    def deployed_round(self) -> int | None:
        return self.round_guard.deployed_round

    # ------------------------------------------------------------------ one fold
    def train_fold(self, training_set: Sequence[Mapping[str, Any]], fold_dir: Path) -> Path:
        """Train a fresh network on ``training_set``; return its ``model.pt`` (cached)."""
        return train_network(self.build_network, training_set, fold_dir, self.patch_size, self.target_spacing,
                             self.settings, self.seed, self.device, num_labelled=len(self.labelled),
                             labelled_share=self.guards.share, amp=self.amp)

    def load(self, model_file: Path) -> nn.Module:
        return load_network_weights(self.build_network(), model_file).to(self.device).eval()

    def inferer(self) -> SlidingWindowInferer:
        return SlidingWindowInferer(roi_size=self.patch_size, sw_batch_size=int(self.settings["sw_batch_size"]),
                                    overlap=float(self.settings["sw_overlap"]), mode="gaussian")

    # ------------------------------------------------------------------ all rounds
    def fold_stage(self, r: int, k: int, fold: Mapping[str, Any], pseudo: Mapping[str, str],
                   excluded: Sequence[Mapping[str, Any]] = ()) -> FunctionStage:
        """Fold ``k`` of round ``r``: train on the labelled + the other folds' cases, re-predict its own.

        ``excluded``: the round's implausible pseudo-labels (``RoundGuard.screen``), left out of the
        training set and listed in the fold's ``stage.json`` inputs; the held-out fold is re-predicted whole.
        """
        fold_dir = self.root / f"round{r}" / f"fold{k}"
        left_out = {e["image"]: e for e in excluded}
        training_set = self.labelled + [{"image": e["image"], "label": pseudo[e["image"]]} for e in fold["train"]
                                        if e["image"] not in left_out]
        held_out = [{"image": e["image"]} for e in fold["val"]]
        inputs = {"round": r, "fold": k, "training_set": training_set, "held_out": [e["image"] for e in held_out],
                  "settings": dict(self.settings), "patch": list(self.patch_size), "spacing": self.target_spacing,
                  "seed": self.seed}
        # only what changes the training enters the fingerprint: a plain (unguarded) run keeps its old one
        if self.guards.share > 0 and len(training_set) > len(self.labelled):
            inputs["labelled_share"] = self.guards.share
        fold_excluded = [dict(left_out[e["image"]]) for e in fold["train"] if e["image"] in left_out]
        if fold_excluded:
            inputs["excluded_pseudo_labels"] = fold_excluded
        inputs.update(precision_inputs(self.amp, self.device))

        def compute(out_dir: Path) -> dict[str, Any]:
            model_file = self.train_fold(training_set, out_dir)
            records = write_pseudo_labels(self.load(model_file), held_out,
                                          volume_transforms("infer", target_spacing=self.target_spacing),
                                          self.inferer(), out_dir / HELD_OUT,
                                          fingerprint=f"{file_sha256(model_file)[:16]}|fold{k}", device=self.device)
            return {"model": str(model_file), "held_out": records}

        return FunctionStage(f"FSL round {r} fold {k}", fold_dir, lambda: inputs, compute, rank=self.rank,
                             owner=k % self.world_size)

    def run(self) -> list[Path]:
        """Every round (until the stopping rule stops them); the deployed round's K fold model files.

        A process computes the folds it owns first, then reads (waiting if need be) the others'.
        After each round the agreement between its re-predictions and the (kept) pseudo-labels it
        trained from is logged and recorded with the decision (``round<r>/round.json``).
        """
        pseudo = dict(self.initial)
        unlabelled = [{"id": image, "image": image} for image in sorted(pseudo)]
        models_of: list[list[Path]] = []
        for r in range(self.rounds):
            kept, excluded = self.round_guard.screen(r, pseudo)
            folds = kfold_splits(unlabelled, self.num_folds, seed=self.seed + r)
            stages = [self.fold_stage(r, k, fold, pseudo, excluded) for k, fold in enumerate(folds)]
            for stage in sorted(stages, key=lambda s: s.owner != self.rank):
                stage.run()
            outputs = [stage.run() for stage in stages]  # kept by each stage: nothing runs twice
            models_of.append([Path(o["model"]) for o in outputs])
            refreshed = {rec["image"]: rec["pseudo_label"] for o in outputs for rec in o["held_out"]}
            pseudo = refreshed
            if self.round_guard.after_round(r, kept, excluded, refreshed, self.root / f"round{r}"):
                break
        print(self.round_guard.summary(), flush=True)
        return models_of[self.deployed_round]

    def ensemble(self, models: Sequence[Path] | None = None) -> FoldEnsemble:
        """The fold ensemble of the deployed round (running every round not run yet)."""
        files = list(models) if models is not None else self.run()
        return FoldEnsemble([self.load(f) for f in files]).eval()

