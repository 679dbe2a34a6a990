"""Inference-only forms of a trained network: batch norm folded into convolutions, TorchScript export.

At inference a batch norm is a fixed per-channel affine map, so one that directly follows a
convolution can be folded into that convolution's weights and bias. For a MobileNet that removes
a third of the layers and a full read and write of every activation; on 2 CPU threads it cuts
the eager latency of the samkd bundle's MobileNet main network by ~25%
(``tools/benchmark_samkd_latency.py``).

Folding is done on a copy, so the training network (and its state dict layout, which
checkpoints and ``load_network_weights`` rely on) never changes. Only pairs inside an
``nn.Sequential`` are folded: there a convolution's output feeds nothing but the next module,
so folding can never change what another branch sees. That covers torchvision's
``Conv2dNormActivation`` and MobileNet blocks and the samkd bundle's separable blocks (not MONAI's
``Convolution``, whose norm sits one level down in its ``ADN`` block). The arithmetic is PyTorch's own ``torch.nn.utils.fusion.fuse_conv_bn_eval``.

:func:`export_torchscript` writes such a folded copy as TorchScript with the same metadata and
embedded configs as ``python -m monai.bundle ckpt_export``, so zoo and MONAI Label loaders read it.
Unlike ``torch.jit.freeze`` the result is an ordinary scripted module that still moves between
devices.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samssl.utils.bundles import merged_config
from samssl.utils.modules import fold_batch_norm

__all__ = ["export_torchscript", "fold_batch_norm"]


def _set_id(config: dict, config_id: str, value: Any) -> None:
    """``config[a][b] = value`` for MONAI's id ``a#b``."""
    *parents, leaf = config_id.split("#")
    for part in parents:
        config = config.setdefault(part, {})
    config[leaf] = value


def export_torchscript(
    network: nn.Module,
    filepath: str | Path,
    meta_file: str | Path | None = None,
    config_files: Sequence[str | Path] = (),
    fold: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Script ``network`` (batch norms folded unless ``fold=False``) on the CPU and save it with bundle metadata.

    Args:
        network: the trained network, weights loaded; it is not modified.
        filepath: the file to write (``.ts`` is appended when it has no suffix; parent folders are created).
        meta_file: the bundle's ``metadata.json``, stored as the module's ``metadata.json``
            extra file, as ``ckpt_export --meta_file`` does.
        config_files: bundle configs to embed, each under its file name (``inference.json``), whole:
            a bundle's own part merged onto its shared ``base_<name>.json`` when it has one, as
            ``monai.bundle run`` reads it (:func:`samssl.utils.bundles.merged_config`).
        fold: fold batch norms into convolutions first (:func:`fold_batch_norm`).
        settings: config id -> value of the training settings the model was loaded with (input size
            or spacing, window): written into each embedded config in place of the expression that
            reads them from ``model.pt`` (which does not travel with the TorchScript file), and stored
            as the ``trained_settings.json`` extra file.

    Returns:
        The path written.
    """
    from monai.data import save_net_with_metadata

    deployed = fold_batch_norm(network) if fold else copy.deepcopy(network).eval()
    meta = json.loads(Path(meta_file).read_text()) if meta_file is not None else None
    extra_files = {}
    for config in config_files:
        name = Path(config).name
        if not name.endswith(".json"):
            raise ValueError(f"config files are embedded as JSON; {config} is not a .json file.")
        content = merged_config(config)
        for config_id, value in (settings or {}).items():
            _set_id(content, config_id, value)
        extra_files[name] = json.dumps(content).encode()
    if settings:
        extra_files["trained_settings.json"] = json.dumps(dict(settings)).encode()
    filepath = Path(filepath)
    if not filepath.suffix:
        filepath = filepath.with_suffix(".ts")
    filepath.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        scripted = torch.jit.script(deployed.cpu())
    save_net_with_metadata(scripted, str(filepath), include_config_vals=False, append_timestamp=False,
                           meta_values=meta, more_extra_files=extra_files)
    return filepath
