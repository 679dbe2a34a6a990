"""The whole SSL-MedSAM2 training (Algorithm 1), as the steps the bundle's ``"stages"`` lists.

:attr:`SSLMedSAM2.tffs_stage`, :attr:`~SSLMedSAM2.fsl_stage` and :attr:`~SSLMedSAM2.ensemble_stage`
are the three steps in the paper's order, run by :func:`samssl.stages.run_stages` once the config
is resolved (:meth:`SSLMedSAM2.run` runs all three); each writes :class:`samssl.stages.Stage`
folders with manifests, so a killed run resumes and a finished step is read back, not recomputed.

1. **TFFS** (``<output_dir>/tffs``): the frozen propagator pseudo-labels every unlabelled volume
   from the labelled ones (:mod:`scripts.tffs`), once; cached case by case.
2. **FSL** (``<output_dir>/fsl``): ``rounds`` of K-fold re-training (:mod:`scripts.fsl`), each
   round re-predicting every unlabelled case with the fold model that held it out.
3. The deployed round's K networks (the last round's, unless the guards' stopping rule stopped
   the rounds and chose the round before, :mod:`scripts.fsl_guards`) are saved together as one
   :class:`~scripts.planned_unet.FoldEnsemble` state dict in ``model.pt``: the deployed
   model, which averages the folds' probabilities. :attr:`SSLMedSAM2.deployed` is that ensemble
   as a module from the start (untrained until :meth:`~SSLMedSAM2.run` loads the weights), so an
   evaluation engine can be built before training without reading a file.

``method="suponly"`` is the baseline with the same network and schedule: one network on the
labelled cases alone (an "ensemble" of one).

``backend="nnunetv2"`` runs stage 2 through the real nnU-Net instead
(:mod:`scripts.nnunet_backend`, ``<output_dir>/nnunet_fsl``): the deployed model is then nnU-Net's
results folder of the deployed round, and :attr:`SSLMedSAM2.deployed` scores nnU-Net's own
predictions (``<output_dir>/nnunet_predictions``) through the bundle's evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from torch import nn

from samssl.engines.precision import AmpSetting
from samssl.handlers.checkpoints import AtomicDiskSaver, load_network_weights
from samssl.handlers.deployment import SETTINGS_ENTRY, TrainedSettings
from samssl.stages import FunctionStage, Step

from .fsl import FoldRetraining, precision_inputs, train_network
from .fsl_guards import FSLGuards
from .nnunet_backend import NnUNetFoldRetraining, NnUNetPredictions, NnUNetSettings
from .planned_unet import FoldEnsemble
from .tffs import TrainingFreeFewShot, write_tffs_pseudo_labels

__all__ = ["BACKENDS", "METHODS", "SSLMedSAM2", "ensemble_size", "evaluation_inferer"]

METHODS = ("ssl_medsam2", "suponly")
BACKENDS = ("monai", "nnunetv2")


def ensemble_size(method: str, num_folds: int) -> int:
    """Networks in the deployed model: K folds, or 1 for SupOnly."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return 1 if method == "suponly" else int(num_folds)


def evaluation_inferer(backend: str, patch_size: Sequence[int], sw_batch_size: int, overlap: float):
    """The evaluator's inferer: sliding windows over the fold ensemble, whole volumes for nnU-Net's files."""
    if backend not in BACKENDS:
        raise ValueError(f"fsl#backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nnunetv2":
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=list(patch_size), sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                                mode="gaussian")


class SSLMedSAM2:
    """TFFS, then FSL rounds, then the fold ensemble in ``model_file``.

    Args:
        datalist: ``{"labelled": [...], "unlabelled": [...]}`` (``prepare_split``); only the
            ``image`` of unlabelled entries is read.
        output_dir: run folder (``tffs/``, ``fsl/``, ``suponly/``).
        model_file: where the deployed ensemble's state dict goes (entry ``model``, beside the
            ``trained_settings`` record that evaluation and inference read).
        build_network: ``() -> nn.Module`` one fold network (the planned DynUNet).
        tffs: the training-free few-shot pseudo-labeller (unused by SupOnly).
        tffs_fingerprint: identifies the propagator's weights and TFFS settings (cache key).
        method: ``"ssl_medsam2"`` or ``"suponly"``.
        num_folds, rounds, training: FSL's K, rounds and per-fold training settings.
        backend: ``"monai"`` (the planned DynUNet through the ignite engine) or ``"nnunetv2"``.
        nnunet: :class:`~scripts.nnunet_backend.NnUNetSettings` of the nnU-Net backend.
        guards: :class:`~scripts.fsl_guards.FSLGuards` of the FSL rounds (``True``: the defaults,
            ``False``: the paper's plain Algorithm 1); the nnU-Net backend applies the filter and the
            stopping rule, not the labelled share.
        trained_settings: config id -> value of the settings inference needs (spacing, window, the
            ensemble's architecture), saved in ``model_file`` (:mod:`samssl.handlers.deployment`).
        amp: the bundle's precision switch for the networks' training (:mod:`samssl.engines.precision`;
            the nnU-Net backend keeps its own: CUDA AMP on a GPU).
        rank, world_size: several processes (``multi_gpu_train.json``): process 0 writes the TFFS
            pseudo-labels and the deployed file, the folds are shared out (:class:`FoldRetraining`);
            the processes coordinate through the stages' manifests, no process group is needed.
    """

    def __init__(self, datalist: Mapping[str, Sequence[Mapping[str, Any]]], output_dir: str | Path,
                 model_file: str | Path, build_network: Callable[[], nn.Module], tffs: TrainingFreeFewShot | None,
                 tffs_fingerprint: str, patch_size: Sequence[int], target_spacing: float | None,
                 method: str = "ssl_medsam2", num_folds: int = 5, rounds: int = 3,
                 training: Mapping[str, Any] | None = None, seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, backend: str = "monai",
                 nnunet: Mapping[str, Any] | None = None, trained_settings: Mapping[str, Any] | None = None,
                 guards: bool | Mapping[str, Any] | None = None, amp: AmpSetting = False) -> None:
        ensemble_size(method, num_folds)  # validates the method
        if backend not in BACKENDS:
            raise ValueError(f"fsl#backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "nnunetv2" and method == "suponly":
            raise ValueError("the SupOnly baseline trains the in-bundle network: use fsl#backend 'monai'")
        self.labelled = list(datalist["labelled"])
        self.unlabelled = list(datalist.get("unlabelled", []))
        if not self.labelled:
            raise ValueError("SSL-MedSAM2 needs labelled volumes (num_labelled >= 1)")
        if method != "suponly" and tffs is None:
            raise ValueError("SSL-MedSAM2 needs a TFFS pseudo-labeller (tffs)")
        self.root = Path(output_dir)
        self.model_file = Path(model_file)
        self.build_network = build_network
        self.tffs = tffs
        self.tffs_fingerprint = tffs_fingerprint
        self.patch_size = tuple(int(s) for s in patch_size)
        self.target_spacing = target_spacing
        self.method = method
        self.num_folds = int(num_folds)
        self.rounds = int(rounds)
        self.training = dict(training or {})
        self.seed = int(seed)
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        self.backend = backend
        self.nnunet_settings = NnUNetSettings(nnunet)
        self.trained_settings = dict(trained_settings or {})
        self.guards = FSLGuards.resolve(guards)
        self.amp = amp
        self._nnunet: NnUNetFoldRetraining | None = None
        self._records: list[dict[str, Any]] | None = None
        self._fold_files: list[Path] | None = None
        if backend == "nnunetv2":
            self.deployed: nn.Module = NnUNetPredictions(self._nnunet_predict, self.root / "nnunet_predictions",
                                                         target_spacing)
        else:
            self.deployed = FoldEnsemble([build_network() for _ in range(ensemble_size(method, num_folds))])

    # ------------------------------------------------------------------ the steps, as the config lists them
    @property
    def tffs_stage(self) -> Step:
        """Step 1: TFFS pseudo-labels of every unlabelled case."""
        return Step("TFFS pseudo-labels", self.pseudo_labels)

    @property
    def fsl_stage(self) -> Step:
        """Step 2: the FSL rounds of K-fold re-training (SupOnly: one network on the labelled cases)."""
        return Step("FSL rounds", lambda: self.nnunet_retraining().run() if self.backend == "nnunetv2" else self.fold_models())

    @property
    def ensemble_stage(self) -> Step:
        """Step 3: the deployed round's fold networks, saved together as the deployed model."""
        return Step("fold ensemble", self.deploy)

    def pseudo_labels(self) -> list[dict[str, Any]]:
        """Stage 1: TFFS pseudo-labels of every unlabelled case (cached case by case; process 0 writes them)."""
        if self._records is None:
            if not self.unlabelled:
                raise ValueError("SSL-MedSAM2 pseudo-labels unlabelled volumes: the unlabelled list is empty "
                                 "(lower num_labelled, or train the SupOnly baseline)")
            inputs = {"tffs": self.tffs_fingerprint, "spacing": self.target_spacing,
                      "labelled": [{"image": str(e["image"]), "label": str(e["label"])} for e in self.labelled],
                      "unlabelled": [str(e["image"]) for e in self.unlabelled]}
            stage = FunctionStage("TFFS pseudo-labels", self.root / "tffs", lambda: inputs, lambda out: {
                "records": write_tffs_pseudo_labels(self.tffs, self.labelled, self.unlabelled, out,
                                                    self.tffs_fingerprint, self.target_spacing)}, rank=self.rank)
            self._records = stage.run()["records"]
        return list(self._records)

    def fold_models(self) -> list[Path]:
        """Stages 1-2; the files of the networks that make up the deployed model."""
        if self._fold_files is not None:
            return list(self._fold_files)
        if self.method == "suponly":
            if self.rank != 0:
                raise ValueError("SupOnly trains one network: run it as a single process")
            inputs = {"labelled": [{"image": str(e["image"]), "label": str(e["label"])} for e in self.labelled],
                      "settings": self.training, "patch": list(self.patch_size), "spacing": self.target_spacing,
                      "seed": self.seed}
            inputs.update(precision_inputs(self.amp, self.device))
            stage = FunctionStage("SupOnly network", self.root / "suponly", lambda: inputs, lambda out: {
                "model": str(train_network(self.build_network, self.labelled, out, self.patch_size,
                                           self.target_spacing, self.training, self.seed, self.device,
                                           amp=self.amp))},
                rank=self.rank)
            self._fold_files = [Path(stage.run()["model"])]
        else:
            retraining = FoldRetraining(self.build_network, self.labelled, self.pseudo_labels(), self.root / "fsl",
                                        self.patch_size, self.target_spacing, self.training, self.num_folds,
                                        self.rounds, self.seed, self.device, self.rank, self.world_size,
                                        guards=self.guards, amp=self.amp)
            self._fold_files = retraining.run()
        return list(self._fold_files)

    def nnunet_retraining(self) -> NnUNetFoldRetraining:
        """Stage 2 through nnU-Net (stage 1 first); built once."""
        if self._nnunet is None:
            if not self.unlabelled:
                raise ValueError("SSL-MedSAM2 pseudo-labels unlabelled volumes: the unlabelled list is empty")
            s = self.nnunet_settings
            if self.guards.share > 0:
                print("fsl#backend nnunetv2: the labelled share of the FSL guards applies to the 'monai' backend only "
                      "(nnU-Net's loader draws its own batches); the pseudo-label filter and the stopping rule apply",
                      flush=True)
            self._nnunet = NnUNetFoldRetraining(
                self.labelled, self.pseudo_labels(), self.root / "nnunet_fsl", self.num_folds, self.rounds,
                epochs=int(s["epochs"]), iterations_per_epoch=int(s["iterations_per_epoch"]),
                dataset_id=int(s["dataset_id"]), channel_name=str(s["channel_name"]),
                use_mirroring=bool(s["use_mirroring"]), spacing=s["spacing"], seed=self.seed, device=self.device,
                rank=self.rank, world_size=self.world_size, guards=self.guards)
        return self._nnunet

    def _nnunet_predict(self, images: Sequence[str], out_dir: Path) -> list[Path]:
        return self.nnunet_retraining().predict(images, out_dir)

    def deploy(self) -> Path:
        """Step 3: write the deployed model (the fold ensemble) to ``model_file``; return where it is.

        With the nnU-Net backend nothing is written to ``model_file``: the deployed model is
        nnU-Net's results folder, which is returned.
        """
        if self.backend == "nnunetv2":
            results = self.nnunet_retraining().run()
            print(f"deployed nnU-Net fold ensemble: {results} (nnUNetv2_predict with nnUNet_results="
                  f"{results.parents[1]})", flush=True)
            return results
        files = self.fold_models()
        ensemble = FoldEnsemble([load_network_weights(self.build_network(), f) for f in files])
        if self.rank == 0:
            deployed = {"model": ensemble.state_dict(), SETTINGS_ENTRY: TrainedSettings(self.trained_settings).state_dict()}
            AtomicDiskSaver(self.model_file.parent, filename=self.model_file.name)(deployed, self.model_file.name)
        self.deployed.load_state_dict(ensemble.state_dict())
        print(f"deployed {self.method} model ({len(files)} network(s)) -> {self.model_file}", flush=True)
        return self.model_file

    def run(self) -> Path:
        """Every step not run yet (TFFS, FSL, the ensemble); where the deployed model is."""
        if self.method != "suponly":
            self.tffs_stage.run()
        self.fsl_stage.run()
        return self.ensemble_stage.run()
