"""MONAI Label app serving every bundle of this project (the monaibundle pattern).

Each folder under the bundles directory with ``configs/inference.json`` becomes an infer task (once
it holds a trained ``models/model.pt``) and, with ``configs/train.json``, a train task; a new bundle
is served by existing. Start it with::

    monailabel start_server --app apps/monailabel --studies /data/my_studies --conf models all --host 127.0.0.1

``--host 127.0.0.1`` serves this machine only (MONAI Label's own default, 0.0.0.0, listens on every
network interface, and the server has no authentication); connect the viewer to
``http://127.0.0.1:8000``.

Options (``--conf key value``):

* ``models``: ``all`` (default) or a comma-separated list of bundle names;
* ``bundles_dir``: where the bundles are (default: this repository's ``bundles/``).

Training keeps the semi-supervised part of each bundle: MONAI Label's labelled studies replace
the bundle's labelled list, and the datastore's studies without a label become the bundle's
unlabelled stream (``datalist['unlabelled']``), so a clinician's unlabelled images are used as
the method intends. Each bundle only sees the studies of its own kind (2D images for the
dermoscopy bundles, volumes for the 3D ones). Each train request is a fresh run in
``runs/monailabel_<time>`` of the bundle; its final model replaces ``models/model.pt``, which
the infer task reloads. A request may carry ``bundle_overrides`` (config id -> value, e.g.
``{"image_size": 128}``) for anything else the bundle's ``train.json`` exposes.

Masks come back losslessly: PNG for the 2D bundles (uint8, 0 background, 1 lesion) and NIfTI
(``.nii.gz``, on the input volume's grid) for the 3D ones, whatever the input's format. MONAI Label
would otherwise write the mask in the input's format, a JPEG for a ``.jpg`` image, whose compression
changes a binary mask's values. A request may ask for another lossless format with
``result_extension`` (e.g. ``.nrrd``); a lossy one (``.jpg``) is refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monai.bundle import ConfigParser
from monai.transforms import MapTransform
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from samssl.data import IMAGE_SUFFIXES, VOLUME_SUFFIXES
from samssl.utils.bundles import config_with_base
from samssl.utils.errors import InvalidInputError

logger = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[2]
SUFFIXES_BY_DIMENSIONS = {2: IMAGE_SUFFIXES, 3: VOLUME_SUFFIXES}
# The format a mask is returned in unless the request names another (MONAI Label's writer would use
# the input image's, e.g. JPEG); both keep a label map's values exactly.
MASK_EXTENSIONS = {2: ".png", 3: ".nii.gz"}
# Formats that compress with loss: a mask written in them no longer holds only its label values.
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")


def bundle_dimensions(bundle: Path) -> int:
    """2 or 3: the spatial dimensions of the bundle's network input, from its metadata."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return len(next(iter(meta["network_data_format"]["inputs"].values()))["spatial_shape"])


def of_kind(path: str, dimensions: int) -> bool:
    """Whether a datastore file is an image of the kind a bundle takes (by its extension)."""
    return path.lower().endswith(SUFFIXES_BY_DIMENSIONS[dimensions])


class PlanarMask(MapTransform):
    """A 2D mask (1, x, y) as the uint8 (x, y) array MONAI Label's writer saves as an image.

    The writer transposes to ITK's row-major layout itself; left with its channel axis the mask
    would be written as a 3D image (a PNG of one column), and as float PNG cannot hold it.
    """

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key].detach().cpu().numpy() if isinstance(d[key], torch.Tensor) else np.asarray(d[key])
            if mask.ndim == 3:
                mask = mask[0]
            d[key] = mask.astype(np.uint8)
        return d


class StashRequestFields:
    """Moves MONAI Label's ``<image key>_*`` request fields that are not metadata (``image_path``) aside, or back.

    MONAI's dictionary ``Spacingd`` updates every ``<key>_*`` entry of a NIfTI input as a
    metadata dictionary and fails on a string; the writer needs ``image_path`` back afterwards.
    """

    PREFIX = "request_field:"

    def __init__(self, image_key: str, restore: bool = False) -> None:
        self.image_key, self.restore = image_key, restore

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        if self.restore:
            for key in [k for k in d if k.startswith(self.PREFIX)]:
                d[key[len(self.PREFIX):]] = d.pop(key)
        else:
            for key in [k for k in d if k.startswith(f"{self.image_key}_") and not isinstance(d[k], dict)]:
                d[self.PREFIX + key] = d.pop(key)
        return d


class SemiSupervisedBundleInferTask(BundleInferTask):
    """MONAI Label's bundle infer task, loading ``model.pt`` strictly (a wrong file is an error, not noise),
    with ``configs/inference.json`` merged onto the bundle's shared ``configs/base_inference.json`` as
    ``monai.bundle run`` merges them (MONAI Label itself reads the one file), and masks returned in a
    lossless format (:data:`MASK_EXTENSIONS`) rather than the input image's."""

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, load_strict=True)
        if self.is_valid():  # an invalid task (no model.pt yet) never ran BasicInferTask's __init__
            # the request starts from this config, so a request's own result_extension still wins
            self._config["result_extension"] = MASK_EXTENSIONS[self.dimension]

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[Any, dict]:
        """Refuse a lossy ``result_extension`` before running the model: a JPEG mask is not the model's
        mask (compression changes its values). Answered as HTTP 400 with the reason, not a bare 500."""
        requested = str(request.get("result_extension") or self._config.get("result_extension") or "")
        if requested.lower().endswith(LOSSY_EXTENSIONS):
            error = InvalidInputError(
                f"result_extension {requested!r} is a lossy format, which changes a mask's label values; "
                f"ask for {MASK_EXTENSIONS[self.dimension]!r} (the default) or another lossless format."
            )
            raise HTTPException(status_code=400, detail=str(error)) from error
        return super().__call__(request, callbacks)

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        bundle_config = ConfigParser()
        bundle_config.read_config([str(p) for p in config_with_base(config)])
        bundle_config.config.update({self.const.key_bundle_root(): path})  # type: ignore[union-attr]
        return bundle_config

    def pre_transforms(self, data: dict[str, Any] | None = None) -> list:
        return [StashRequestFields(self.key_image), *super().pre_transforms(data)]

    def post_transforms(self, data: dict[str, Any] | None = None) -> list:
        post = list(super().post_transforms(data))
        if self.dimension == 2:
            post.append(PlanarMask(keys=self.key_pred))
        return [*post, StashRequestFields(self.key_image, restore=True)]


class SemiSupervisedBundleTrainTask(BundleTrainTask):
    """MONAI Label's bundle trainer, with the datastore's unlabelled studies as the unlabelled stream.

    The bundle's own ``datalist`` entry (labelled / unlabelled / validation) is replaced as a
    whole, so everything that reads it (e.g. SemiSAM's SAM volumes) sees the same split, and the
    bundle's handlers (resume, atomic ``model.pt``) are kept rather than MONAI Label's.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, load_strict=True)
        self.dimensions = bundle_dimensions(Path(path))
        self._datastore: Datastore | None = None
        self._request: dict[str, Any] = {}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict:
        self._datastore, self._request = datastore, request
        return super().__call__(request, datastore)

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, str]]:
        return [d for d in super()._fetch_datalist(request, datastore) if of_kind(d["image"], self.dimensions)]

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: Any) -> None:
        """Nothing to add: the bundle's handlers resume its own runs; a request starts a fresh run."""

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        assert self._datastore is not None
        labelled = overrides.pop(self.const.key_train_dataset_data())
        validation = overrides.pop(self.const.key_validate_dataset_data(), None) or []
        overrides.pop(self.const.key_train_handlers(), None)
        store = self._datastore
        unlabelled = [{"image": store.get_image_uri(i)} for i in store.get_unlabeled_images()]
        unlabelled = [u for u in unlabelled if of_kind(u["image"], self.dimensions)]
        if not labelled:
            raise ValueError(f"no labelled {self.dimensions}D studies in the datastore for {Path(self.bundle_path).name}.")
        logger.info(f"{Path(self.bundle_path).name}: {len(labelled)} labelled, {len(unlabelled)} unlabelled, "
                    f"{len(validation)} validation studies")
        overrides["datalist"] = {"labelled": labelled, "unlabelled": unlabelled, "validation": validation}
        overrides["run_name"] = "monailabel_" + time.strftime("%Y%m%d_%H%M%S")
        overrides["max_epochs"] = overrides[self.const.key_train_trainer_max_epochs()]
        overrides.update(self._request.get("bundle_overrides") or {})
        return overrides


class SemiSupervisedBundlesApp(MONAILabelApp):
    """Serves the bundles found in ``bundles_dir`` (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles_dir = Path(conf.get("bundles_dir") or REPOSITORY / "bundles").resolve()
        wanted = conf.get("models", "all")
        found = sorted(p.name for p in self.bundles_dir.iterdir() if (p / "configs" / "inference.json").is_file())
        names = found if wanted == "all" else [m.strip() for m in wanted.split(",") if m.strip()]
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise ValueError(f"unknown bundles {unknown} in --conf models; {self.bundles_dir} has {found}.")
        self.bundle_names = names
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="SAM-assisted semi-supervised bundles",
                         description="Semi-supervised segmentation bundles (UAMT, SAM-distilled dual task, SemiSAM, ...)",
                         version="0.1.0")

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name in self.bundle_names:
            task = SemiSupervisedBundleInferTask(str(self.bundles_dir / name), self.conf)
            if task.is_valid():
                infers[name] = task
            else:
                logger.warning(f"{name}: no trained model yet (models/model.pt); train it to serve inference.")
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        for name in self.bundle_names:
            task = SemiSupervisedBundleTrainTask(str(self.bundles_dir / name), self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers
