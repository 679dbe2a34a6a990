"""FSL with the real nnU-Net (``nnunetv2``) as the fold network: the paper's own re-training backend.

The in-bundle default (:mod:`scripts.fsl`) trains a MONAI ``DynUNet`` planned by nnU-Net's rules
through the ignite engine, so it resumes, checkpoints and deploys like every other bundle. This
module runs the same Algorithm 1 through nnU-Net itself, for users with a GPU who want nnU-Net's
planning, preprocessing, augmentation and sliding-window predictor unchanged:

Round ``r`` (``<work_dir>/round<r>/`` holds that round's ``nnUNet_raw``, ``nnUNet_preprocessed``
and ``nnUNet_results``):

1. :func:`write_raw_dataset`: nnU-Net's raw layout (``imagesTr/<case>_0000.nii.gz``,
   ``labelsTr/<case>.nii.gz``, ``dataset.json``) of the labelled cases and the unlabelled cases
   with their current pseudo-labels; checked by nnU-Net's own ``verify_dataset_integrity``.
2. Round 0 extracts the fingerprint and plans (``ExperimentPlanner``); later rounds reuse round
   0's plans, so every round trains the same network on the same patches. Each round
   preprocesses its labels anew.
3. ``splits_final.json`` holds the K folds of Algorithm 1: fold ``k`` trains on the labelled
   cases + the other folds' pseudo-labelled cases and validates on its own held-out fold.
4. Each fold trains a fresh ``nnUNetTrainer`` (``epochs`` x ``iterations_per_epoch``; resumes
   from ``checkpoint_latest.pth`` after a kill) and re-predicts its held-out fold with
   ``nnUNetPredictor``; those predictions are the next round's pseudo-labels.

The deployed model is the deployed round's results folder (the last round's, unless the stopping
rule chose an earlier one): ``nnUNetPredictor`` with every fold averages the K networks (nnU-Net's
fold ensemble), :meth:`NnUNetFoldRetraining.predict`.

Two of the FSL guards (:mod:`scripts.fsl_guards`) apply here as in the MONAI backend: implausible
pseudo-labels are left out of the round's ``splits_final.json`` training lists (they stay in the
raw dataset, which nnU-Net's planning and preprocessing read whole), and the rounds stop when their
agreement drops. The labelled share does not: nnU-Net's data loader draws cases itself (with its
own foreground oversampling), so a share would need a custom trainer and loader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from samssl.data import kfold_splits, volume_transforms
from samssl.stages import FunctionStage
from samssl.stages.pseudo_labels import warn_if_empty_label_files
from samssl.utils.config_checks import SettingsDict

from .fsl_guards import FSLGuards, RoundGuard

__all__ = ["NnUNetFoldRetraining", "NnUNetPredictions", "NnUNetSettings", "case_identifiers", "nnunet_paths",
           "write_raw_dataset"]

CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainer"
FILE_ENDING = ".nii.gz"


def _require_nnunetv2() -> None:
    if importlib.util.find_spec("nnunetv2") is None:
        raise ImportError("the nnU-Net backend needs the nnunetv2 package: pip install 'nnunetv2>=2.6,<2.9' "
                          "(or the project's 'nnunet' extra)")


@contextmanager
def nnunet_paths(root: str | Path, data_augmentation_processes: int | None = None) -> Iterator[Path]:
    """Point nnU-Net's three folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) into ``root``.

    nnunetv2 reads these environment variables when a path is used, so one process can work on
    several roots one after another; the previous values are restored on exit.
    ``data_augmentation_processes`` sets ``nnUNet_n_proc_DA`` (0: augment in the training process).
    """
    root = Path(root)
    values = {name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    if data_augmentation_processes is not None:
        values["nnUNet_n_proc_DA"] = str(int(data_augmentation_processes))
    previous = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if name != "nnUNet_n_proc_DA":
            Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[name] = value
    try:
        yield root
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def case_identifiers(images: Sequence[str | Path]) -> list[str]:
    """nnU-Net case names from image file names (extension dropped, unsafe characters replaced).

    Files that share a name (one folder per patient, each with ``GED4.nii.gz``) are told apart by
    their parent folder. Raises ``ValueError`` when two images would still share a name.
    """
    def stem(path: Path) -> str:
        name = path.name
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name

    paths = [Path(image) for image in images]
    names = [stem(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}_{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
    names = [re.sub(r"[^A-Za-z0-9_-]", "_", n) for n in names]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"several images map to the same nnU-Net case name(s) {clashes[:3]}: rename them")
    return names


def _write_image(source: Path, target: Path) -> None:
    """``target`` (nnU-Net's ``<case>_0000.nii.gz``) as a link to a NIfTI source, else a converted copy."""
    if target.exists() or target.is_symlink():
        target.unlink()
    if source.name.endswith(FILE_ENDING):
        target.symlink_to(source.resolve())
    else:
        sitk.WriteImage(sitk.ReadImage(str(source)), str(target))


def _write_label(label: Path, image: Path, target: Path) -> None:
    """A {0, 1} uint8 label on the image's exact grid (nnU-Net compares the geometry of both)."""
    reference = sitk.ReadImage(str(image))
    mask = sitk.ReadImage(str(label))
    if mask.GetSize() != reference.GetSize():
        raise ValueError(f"label {label} has size {mask.GetSize()} but its image {image} has {reference.GetSize()}: "
                         "a label must be on its image's voxel grid")
    values = sitk.GetArrayFromImage(mask)
    binary = sitk.GetImageFromArray((values > 0.5).astype(np.uint8))
    binary.CopyInformation(reference)
    sitk.WriteImage(binary, str(target), useCompression=True)


def write_raw_dataset(cases: Sequence[Mapping[str, Any]], dataset_dir: str | Path, channel_name: str = "MRI",
                      description: str = "SSL-MedSAM2 FSL: labelled + pseudo-labelled cases") -> dict[str, str]:
    """Write nnU-Net's raw dataset layout for ``cases`` (``image`` + ``label``); returns ``{case name: image}``.

    ``dataset_dir`` must be named ``DatasetXXX_Name`` inside ``nnUNet_raw``. ``channel_name`` picks
    nnU-Net's normalisation ("CT": dataset-wide clipping and z-score; anything else: per-case z-score).
    """
    dataset_dir = Path(dataset_dir)
    if not re.fullmatch(r"Dataset\d{3}_\w+", dataset_dir.name):
        raise ValueError(f"nnU-Net dataset folders are named DatasetXXX_Name, got {dataset_dir.name!r}")
    if not cases:
        raise ValueError(f"no cases to write into {dataset_dir}")
    images_dir, labels_dir = dataset_dir / "imagesTr", dataset_dir / "labelsTr"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    names = case_identifiers([c["image"] for c in cases])
    for name, case in zip(names, cases):
        image = Path(case["image"])
        label = Path(case["label"])
        for path in (image, label):
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
        _write_image(image, images_dir / f"{name}_0000{FILE_ENDING}")
        _write_label(label, image, labels_dir / f"{name}{FILE_ENDING}")
    dataset_json = {
        "name": dataset_dir.name.split("_", 1)[1], "description": description,
        "channel_names": {"0": channel_name}, "labels": {"background": 0, "foreground": 1},
        "numTraining": len(cases), "file_ending": FILE_ENDING,
    }
    (dataset_dir / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return dict(zip(names, (str(c["image"]) for c in cases)))


def verify_raw_dataset(dataset_dir: str | Path) -> None:
    """nnU-Net's own integrity check of a raw dataset folder (raises on any problem)."""
    _require_nnunetv2()
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset_dir), num_processes=1)


class NnUNetFoldRetraining:
    """Algorithm 1's ``rounds`` x ``num_folds`` trainings, each an ``nnUNetTrainer`` on nnU-Net's own data.

    Args:
        labelled: entries with ``image`` and ``label``.
        pseudo_labelled: the unlabelled entries with their initial (TFFS) ``pseudo_label``.
        work_dir: folder of the rounds (each an nnU-Net root).
        num_folds, rounds: K and the number of refinement rounds.
        epochs, iterations_per_epoch: nnU-Net's schedule per fold (its default: 1000 x 250).
        dataset_id: the nnU-Net dataset number used inside ``work_dir``.
        channel_name: the image modality as nnU-Net's ``dataset.json`` names it ("MRI", "CT").
        use_mirroring: test-time mirroring when re-predicting (nnU-Net's default; 8x the cost in 3D).
        spacing: voxel size (mm, one value or three) nnU-Net trains at; None lets its planner choose
            (the median spacing of the data, as the paper ran it).
        seed: seed of the fold assignment.
        device: where nnU-Net trains and predicts.
        rank, world_size: process ``rank`` trains the folds ``k`` with ``k % world_size == rank``.
        guards: :class:`~scripts.fsl_guards.FSLGuards` (``True``: the defaults, ``False``: the plain
            Algorithm 1); the filter and the stopping rule apply, the labelled share does not.
    """

    def __init__(self, labelled: Sequence[Mapping[str, Any]], pseudo_labelled: Sequence[Mapping[str, Any]],
                 work_dir: str | Path, num_folds: int = 5, rounds: int = 3, epochs: int = 1000,
                 iterations_per_epoch: int = 250, dataset_id: int = 501, channel_name: str = "MRI",
                 use_mirroring: bool = True, spacing: float | Sequence[float] | None = None, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
                 guards: bool | Mapping[str, Any] | None = None) -> None:
        _require_nnunetv2()
        if not labelled:
            raise ValueError("nnU-Net FSL needs labelled cases")
        if not 2 <= num_folds <= len(pseudo_labelled):
            raise ValueError(f"num_folds must be between 2 and the number of unlabelled cases "
                             f"({len(pseudo_labelled)}), got {num_folds}")
        if rounds < 1 or epochs < 1 or iterations_per_epoch < 1:
            raise ValueError("rounds, epochs and iterations_per_epoch must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size} processes")
        missing = [e["image"] for e in pseudo_labelled if "pseudo_label" not in e]
        if missing:
            raise ValueError(f"unlabelled cases without a pseudo_label (run TFFS first): {missing[:3]}")
        self.labelled = [{"image": str(e["image"]), "label": str(e["label"])} for e in labelled]
        self.initial = {str(e["image"]): str(e["pseudo_label"]) for e in pseudo_labelled}
        self.root = Path(work_dir)
        self.num_folds, self.rounds = int(num_folds), int(rounds)
        self.epochs, self.iterations_per_epoch = int(epochs), int(iterations_per_epoch)
        self.dataset_name = f"Dataset{int(dataset_id):03d}_SSLMedSAM2"
        self.dataset_id = int(dataset_id)
        self.channel_name = channel_name
        self.use_mirroring = bool(use_mirroring)
        if spacing is not None:
            spacing = [float(spacing)] * 3 if np.isscalar(spacing) else [float(v) for v in spacing]
        self.spacing = spacing
        self.seed = int(seed)
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        images = [e["image"] for e in self.labelled] + sorted(self.initial)
        self.names = dict(zip(images, case_identifiers(images)))
        self._ensemble = None  # the deployed round's fold-ensemble predictor, loaded once for every prediction
        self.guards = FSLGuards.resolve(guards)
        self.round_guard = RoundGuard(self.guards, [e["label"] for e in self.labelled], write=self.rank == 0)

    # ------------------------------------------------------------------ folders
    def round_dir(self, r: int) -> Path:
        return self.root / f"round{r}"

    def model_dir(self, r: int) -> Path:
        """nnU-Net's results folder of round ``r`` (``fold_<k>/checkpoint_final.pth`` inside)."""
        return self.round_dir(r) / "nnUNet_results" / self.dataset_name / f"{TRAINER}__{PLANS}__{CONFIGURATION}"

    def _paths(self, r: int, training: bool = False):
        """nnU-Net's folders of round ``r``; training on the CPU augments in-process (no worker pool to feed)."""
        return nnunet_paths(self.round_dir(r), 0 if training and self.device.type == "cpu" else None)

    # ------------------------------------------------------------------ steps of one round
    def prepare_round(self, r: int, pseudo: Mapping[str, str], folds: Sequence[Mapping[str, Any]],
                      excluded: Sequence[str] = ()) -> None:
        """Raw dataset, plans, preprocessing and the K splits of round ``r`` (process 0; once).

        ``excluded``: images whose pseudo-label the filter left out of this round's training lists.
        """
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprints,
            plan_experiments,
            preprocess,
        )

        with self._paths(r) as root:
            cases = self.labelled + [{"image": i, "label": pseudo[i]} for i in sorted(pseudo)]
            write_raw_dataset(cases, root / "nnUNet_raw" / self.dataset_name, self.channel_name,
                              f"SSL-MedSAM2 FSL round {r}: labelled + pseudo-labelled cases")
            verify_raw_dataset(root / "nnUNet_raw" / self.dataset_name)
            preprocessed = root / "nnUNet_preprocessed" / self.dataset_name
            if r == 0:
                extract_fingerprints([self.dataset_id], num_processes=1, check_dataset_integrity=False,
                                     show_progress_bar=False)
                plan_experiments([self.dataset_id], overwrite_target_spacing=self.spacing)
            else:  # the same plans every round: same network, patch and spacing
                first = self.round_dir(0) / "nnUNet_preprocessed" / self.dataset_name
                preprocessed.mkdir(parents=True, exist_ok=True)
                for name in (f"{PLANS}.json", "dataset_fingerprint.json", "dataset.json"):
                    (preprocessed / name).write_bytes((first / name).read_bytes())
            preprocess([self.dataset_id], PLANS, (CONFIGURATION,), num_processes=(1,), show_progress_bar=False)
            labelled_names = [self.names[e["image"]] for e in self.labelled]
            splits = [{"train": labelled_names + [self.names[e["image"]] for e in fold["train"]
                                                  if e["image"] not in set(excluded)],
                       "val": [self.names[e["image"]] for e in fold["val"]]} for fold in folds]
            (preprocessed / "splits_final.json").write_text(json.dumps(splits, indent=2))

    def train_fold(self, r: int, k: int) -> Path:
        """Train fold ``k`` of round ``r`` (resuming a killed run); its ``checkpoint_final.pth``."""
        from nnunetv2.run.run_training import get_trainer_from_args

        final = self.model_dir(r) / f"fold_{k}" / "checkpoint_final.pth"
        if final.exists():
            return final
        with self._paths(r, training=True):
            trainer = get_trainer_from_args(str(self.dataset_id), CONFIGURATION, k, TRAINER, PLANS, device=self.device)
            trainer.num_epochs = self.epochs
            trainer.num_iterations_per_epoch = self.iterations_per_epoch
            trainer.num_val_iterations_per_epoch = max(1, self.iterations_per_epoch // 5)
            latest = final.with_name("checkpoint_latest.pth")
            if latest.exists():
                trainer.load_checkpoint(str(latest))
            trainer.run_training()
        return final

    def predictor(self, r: int, folds: Sequence[int]):
        """``nnUNetPredictor`` of round ``r``'s ``folds`` (several folds: nnU-Net averages them)."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=self.use_mirroring,
                                    perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                    allow_tqdm=True)
        predictor.initialize_from_trained_model_folder(str(self.model_dir(r)), use_folds=tuple(folds),
                                                       checkpoint_name="checkpoint_final.pth")
        return predictor

    def held_out_files(self, r: int, k: int, images: Sequence[str]) -> dict[str, Path]:
        """Where fold ``k`` of round ``r`` writes its held-out ``images``' predictions: ``{image: file}``."""
        out_dir = self.round_dir(r) / f"held_out_fold{k}"
        return {image: out_dir / f"{self.names[image]}{FILE_ENDING}" for image in images}

    def predict_held_out(self, r: int, k: int, images: Sequence[str]) -> dict[str, str]:
        """Fold ``k``'s predictions of its held-out ``images`` (written once): ``{image: label file}``."""
        targets = self.held_out_files(r, k, images)
        todo = [image for image, target in targets.items() if not target.exists()]
        if todo:
            targets[todo[0]].parent.mkdir(parents=True, exist_ok=True)
            with self._paths(r):
                self.predictor(r, (k,)).predict_from_files_sequential(
                    [[image] for image in todo], [str(targets[i])[: -len(FILE_ENDING)] for i in todo],
                    save_probabilities=False, overwrite=True)
        return {image: str(target) for image, target in targets.items()}

    # ------------------------------------------------------------------ all rounds
    def _settings(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "iterations_per_epoch": self.iterations_per_epoch, "seed": self.seed,
                "dataset_id": self.dataset_id, "channel_name": self.channel_name, "spacing": self.spacing,
                "labelled": self.labelled}

    def round_stages(self, r: int, pseudo: Mapping[str, str], folds: Sequence[Mapping[str, Any]],
                     excluded: Sequence[Mapping[str, Any]] = ()) -> tuple[FunctionStage, list[FunctionStage]]:
        """Round ``r``'s stages: nnU-Net's dataset, plans and preprocessing (process 0), then the K folds
        (process ``k % world_size`` each). Their manifests sit in ``round<r>/stages/``, beside nnU-Net's folders.

        ``excluded``: the round's implausible pseudo-labels (recorded in the stages' inputs when any)."""
        stages_dir = self.round_dir(r) / "stages"
        inputs = {"round": r, "pseudo_labels": dict(pseudo), "folds": [[e["image"] for e in f["val"]] for f in folds],
                  **self._settings()}
        if excluded:  # only then: an unguarded round keeps the fingerprint it had before the guards
            inputs["excluded_pseudo_labels"] = [dict(e) for e in excluded]
        left_out = [e["image"] for e in excluded]

        def prepare(_: Path) -> dict[str, Any]:
            self.prepare_round(r, pseudo, folds, left_out)
            return {}

        def fold_stage(k: int, held_out: list[str]) -> FunctionStage:
            def compute(_: Path) -> dict[str, Any]:
                return {"model": str(self.train_fold(r, k)), "held_out": self.predict_held_out(r, k, held_out)}

            return FunctionStage(f"nnU-Net round {r} fold {k}", stages_dir / f"fold{k}",
                                 lambda: {**inputs, "fold": k}, compute, rank=self.rank, owner=k % self.world_size)

        prepared = FunctionStage(f"nnU-Net round {r}: dataset, plans, preprocessing", stages_dir / "prepare",
                                 lambda: inputs, prepare, rank=self.rank)
        return prepared, [fold_stage(k, [e["image"] for e in fold["val"]]) for k, fold in enumerate(folds)]

    @property
    def deployed_round(self) -> int:
        """The round whose folds are deployed: the stopping rule's choice once :meth:`run` ran, else the last."""
        chosen = self.round_guard.deployed_round
        return self.rounds - 1 if chosen is None else chosen

    def run(self) -> Path:
        """Every round not run yet (until the stopping rule stops them); the deployed round's results folder."""
        pseudo = dict(self.initial)
        unlabelled = [{"id": image, "image": image} for image in sorted(pseudo)]
        for r in range(self.rounds):
            kept, excluded = self.round_guard.screen(r, pseudo)
            folds = kfold_splits(unlabelled, self.num_folds, seed=self.seed + r)
            prepared, fold_stages = self.round_stages(r, pseudo, folds, excluded)
            prepared.run()
            for stage in sorted(fold_stages, key=lambda s: s.owner != self.rank):  # own folds first
                stage.run()
            pseudo = {image: file for stage in fold_stages for image, file in stage.run()["held_out"].items()}
            print(f"nnU-Net round {r}: {self.num_folds} folds trained, {len(pseudo)} pseudo-labels refreshed", flush=True)
            if self.rank == 0:
                warn_if_empty_label_files(pseudo, self.round_dir(r))
            if self.round_guard.after_round(r, kept, excluded, pseudo, self.round_dir(r)):
                break
        print(self.round_guard.summary(), flush=True)
        return self.model_dir(self.deployed_round)

    def predict(self, images: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
        """Segment ``images`` with the deployed round's fold ensemble (run :meth:`run` first); files already there are kept."""
        r = self.deployed_round
        missing = [k for k in range(self.num_folds) if not (self.model_dir(r) / f"fold_{k}" / "checkpoint_final.pth").exists()]
        if missing:
            raise FileNotFoundError(f"folds {missing} of round {r} are not trained in {self.model_dir(r)}: run() first")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = case_identifiers(images)
        todo = [(str(i), n) for i, n in zip(images, names) if not (out_dir / f"{n}{FILE_ENDING}").exists()]
        if todo:
            if self._ensemble is None:
                self._ensemble = self.predictor(r, range(self.num_folds))
            with self._paths(r):
                self._ensemble.predict_from_files_sequential(
                    [[i] for i, _ in todo], [str(out_dir / n) for _, n in todo], save_probabilities=False,
                    overwrite=True)
        return [out_dir / f"{n}{FILE_ENDING}" for n in names]


class NnUNetSettings(SettingsDict):
    """The nnU-Net backend's settings (``fsl#nnunet`` in the configs; nnU-Net's own defaults).

    Keys: ``epochs``, ``iterations_per_epoch`` (1000 x 250), ``use_mirroring`` (test-time mirroring,
    True), ``channel_name`` (the modality, "MRI"; "CT" selects nnU-Net's CT normalisation),
    ``dataset_id`` (the number of the nnU-Net dataset inside the work folder, 501), ``spacing``
    (mm; None: nnU-Net's planner picks the data's median spacing).
    """

    WHAT = "nnU-Net backend settings"
    DEFAULTS: Mapping[str, Any] = {
        "epochs": 1000, "iterations_per_epoch": 250, "use_mirroring": True, "channel_name": "MRI", "dataset_id": 501,
        "spacing": None,
    }


class NnUNetPredictions(nn.Module):
    """nnU-Net's own predictions, scored through the bundle's evaluator as if they came from a network.

    ``forward`` takes the evaluator's whole preprocessed volume (batch of 1; use a ``SimpleInferer``),
    finds the file it was read from (its ``filename_or_obj``), has nnU-Net segment that file with its
    own preprocessing (``predict(images, out_dir) -> files``; written once into ``out_dir``) and
    returns the prediction as two-channel scores on the evaluator's grid: the prediction is loaded
    through the same ``volume_transforms('eval')`` as the label, so it is resampled exactly alike.
    """

    def __init__(self, predict: Callable[[Sequence[str], Path], list[Path]], out_dir: str | Path,
                 target_spacing: float | None) -> None:
        super().__init__()
        self.predict = predict
        self.out_dir = Path(out_dir)
        self.transform = volume_transforms("eval", target_spacing=target_spacing)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != 1:
            raise ValueError(f"nnU-Net predictions are looked up one volume at a time, got a batch of {image.shape[0]}")
        source = getattr(image, "meta", {}).get("filename_or_obj")
        if isinstance(source, (list, tuple)):
            source = source[0]
        if not source:
            raise ValueError("the input volume carries no filename_or_obj: nnU-Net predicts files, not tensors")
        (prediction,) = self.predict([str(source)], self.out_dir)
        mask = self.transform({"image": str(source), "label": str(prediction)})["label"].as_tensor()
        if tuple(mask.shape[1:]) != tuple(image.shape[2:]):
            raise ValueError(f"nnU-Net's prediction of {source} lands on a {tuple(mask.shape[1:])} grid, the evaluator's "
                             f"volume is {tuple(image.shape[2:])}")
        return torch.cat([1.0 - mask, mask])[None].to(image.device)
