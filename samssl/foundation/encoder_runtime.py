"""How a frozen image encoder runs on the CPU: fp32 eager, bf16, ONNX Runtime or OpenVINO.

Why: the image encoder is the whole CPU cost of a SAM-assisted method (LiteMedSAM's TinyViT
takes 3-6 s a 256 px frame on two threads in fp32 eager) and it is frozen, so it can be run by
a faster engine without changing what trains. The runtime is a setting of the model
(``build_foundation_model(..., encoder_runtime="auto")``), never a different model:

==================  ==========================================================================
``fp32``            the encoder module itself, eager (the default: bit-for-bit as before)
``bf16``            a copy with batch norms folded, channels-last, under bf16 autocast
``onnxruntime``     the folded encoder exported to ONNX once, run by ONNX Runtime (fp32)
``openvino``        the same ONNX file compiled by OpenVINO with an f32 precision hint
``openvino_bf16``   OpenVINO with a bf16 precision hint (CPUs with AVX512-BF16 or AMX)
``auto``            the fastest available runtime whose masks match fp32's (see :func:`calibrate`)
==================  ==========================================================================

Only the no-grad ``encode`` path uses the runtime: tuning the encoder (LoRA, ``requires_grad``)
and any encoder with trainable parameters always run the module itself, and a non-CPU model
runs fp32 eager (the exported engines here are CPU ones). Exported files and the ``auto``
choice live in a user cache folder (:func:`cache_dir`), keyed by the weights' identity, the
input shape and the package versions, so they are made once per machine and never committed.

The ONNX graph has a fixed batch of one: TinyViT's ``PatchMerging`` reads the batch size with
``len(x)``, which tracing turns into a constant, so a dynamic batch axis gives wrong shapes.
Frames are therefore run one at a time through the exported engines (static shapes also let
them plan memory once); the eager paths take the whole batch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from samssl.utils.cpu import cpu_model
from samssl.utils.errors import InvalidInputError
from samssl.utils.files import atomic_save
from samssl.utils.modules import fold_batch_norm

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_MAX_DICE_DROP",
    "ENCODER_RUNTIMES",
    "EncoderRunner",
    "FLOAT32_RUNTIMES",
    "available_runtimes",
    "build_runner",
    "cache_dir",
    "calibrate",
    "check_encoder_runtime",
    "embedding_precision",
    "fold_conv_batch_norms",
]

#: Every name ``encoder_runtime`` accepts, in the order ``auto`` prefers on a tie.
ENCODER_RUNTIMES = ("fp32", "bf16", "onnxruntime", "openvino", "openvino_bf16", "auto")
#: A runtime whose box-prompt masks lose more Dice than this against fp32's is not chosen by ``auto``
#: (0.005 = half a Dice point).
AUTO_MAX_DICE_DROP = 0.005
#: Environment variable that moves the cache folder of exported encoders and ``auto`` choices.
CACHE_ENV = "SAMSSL_CACHE_DIR"
#: Bump when the export recipe changes, so old files are not reused.
EXPORT_VERSION = 1

EncoderRunner = Callable[[torch.Tensor], torch.Tensor]


#: Runtimes that compute the encoder in float32. They differ from eager fp32 only in the order of
#: floating-point operations (embedding cosine 1.0000 on real frames), as eager fp32 itself does
#: on another thread count, so they share cached embeddings and stage fingerprints: ``auto``
#: picking OpenVINO on two threads and ONNX Runtime on one must not re-encode a 10 GB cache.
FLOAT32_RUNTIMES = ("fp32", "onnxruntime", "openvino")


def embedding_precision(runtime: str) -> str:
    """What an embedding computed by ``runtime`` is, for cache keys: ``fp32`` for every float32
    runtime, else the runtime itself (a reduced precision changes embeddings beyond the last bits)."""
    return "fp32" if runtime in FLOAT32_RUNTIMES else runtime


def check_encoder_runtime(name: str, supported: Sequence[str] = ENCODER_RUNTIMES) -> str:
    """``name`` if it is one of ``supported``; otherwise an error that lists the choices."""
    if not isinstance(name, str) or name not in supported:
        raise InvalidInputError(
            f"unknown encoder_runtime {name!r}; choose one of: {', '.join(supported)}"
        )
    return name


def cache_dir() -> Path:
    """Folder of exported encoders and ``auto`` choices: ``$SAMSSL_CACHE_DIR``, else the user cache."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "samssl" / "encoders"


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch without mkldnn
        return False


def available_runtimes() -> tuple[str, ...]:
    """The runtimes this machine and environment can run (``auto`` not included)."""
    found = ["fp32"]
    bf16 = _cpu_has_bf16()
    if bf16:
        found.append("bf16")
    if importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None:
        found.append("onnxruntime")
    if importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnx") is not None:
        found.append("openvino")
        if bf16:
            found.append("openvino_bf16")
    return tuple(found)


def fold_conv_batch_norms(encoder: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of ``encoder`` with each ``Conv2d -> BatchNorm2d`` pair of a Sequential folded.

    TinyViT is built of ``Conv2d_BN`` Sequentials; folding removes a full pass over every activation
    at no cost in accuracy (:func:`samssl.utils.modules.fold_batch_norm`). The original is left as it is.
    """
    return fold_batch_norm(encoder).requires_grad_(False)


class Bf16Runner:
    """Folded, channels-last copy of the encoder under CPU bf16 autocast; returns fp32 features."""

    def __init__(self, encoder: nn.Module) -> None:
        self.module = fold_conv_batch_norms(encoder).to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.module(x.contiguous(memory_format=torch.channels_last))
        return out.float().contiguous()


def _export_key(identity: str, input_shape: Sequence[int]) -> str:
    parts = f"{identity}|{tuple(input_shape)}|torch={torch.__version__}|v{EXPORT_VERSION}"
    return hashlib.sha256(parts.encode()).hexdigest()[:24]


def export_onnx(encoder: nn.Module, identity: str, input_shape: Sequence[int]) -> Path:
    """The folded encoder as an ONNX file in :func:`cache_dir`, exported once per weights and shape.

    ``identity`` names the weights (the model's ``weights_id`` and name); the file is written
    atomically, so two processes exporting at once never read half a file.
    """
    path = cache_dir() / f"encoder-{_export_key(identity, input_shape)}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    folded = fold_conv_batch_norms(encoder)
    example = torch.zeros(1, *input_shape[1:])

    def write(partial: Path) -> None:
        # never traced under a caller's autocast: the graph would carry its bf16 casts into the cached file
        with torch.inference_mode(False), torch.no_grad(), torch.autocast("cpu", enabled=False):
            torch.onnx.export(folded, (example,), str(partial), input_names=["image"], output_names=["features"],
                              opset_version=17, dynamo=False)

    atomic_save(path, write)
    return path


class OnnxRuntimeRunner:
    """ONNX Runtime CPU session over the exported encoder, one frame per run (see module docstring)."""

    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.detach().float().contiguous().numpy()
        return torch.cat([torch.from_numpy(self.session.run(None, {"image": frames[i:i + 1]})[0])
                          for i in range(frames.shape[0])])


class OpenVinoRunner:
    """OpenVINO CPU model compiled from the exported encoder with an f32 or bf16 precision hint."""

    def __init__(self, onnx_path: Path, threads: int, precision: str) -> None:
        import openvino

        core = openvino.Core()
        # one compiled-model cache folder per precision: with a shared one, OpenVINO 2026.4 crashed
        # (SIGSEGV) on the first bf16 inference after compiling the f32 model in the same process
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(onnx_path.parent / "openvino" / precision)}
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.detach().float().contiguous().numpy()
        return torch.cat([torch.from_numpy(self.compiled(frames[i:i + 1])[0].copy()) for i in range(frames.shape[0])])


def build_runner(encoder: nn.Module, runtime: str, identity: str, input_shape: Sequence[int]) -> EncoderRunner:
    """A callable ``(B, C, H, W) -> features`` that runs ``encoder`` by ``runtime`` (not ``auto``).

    Raises:
        InvalidInputError: ``runtime`` is unknown or not available here (the message says why).
    """
    check_encoder_runtime(runtime, ENCODER_RUNTIMES[:-1])
    if runtime not in available_runtimes():
        need = {"bf16": "a CPU with native bf16 (AVX512-BF16 or AMX)", "onnxruntime": "pip install onnxruntime onnx",
                "openvino": "pip install openvino onnx", "openvino_bf16": "openvino and a CPU with native bf16"}
        raise InvalidInputError(f"encoder_runtime {runtime!r} is not available here: it needs {need[runtime]}; "
                                f"available: {', '.join(available_runtimes())}, auto")
    if runtime == "fp32":
        return encoder
    if runtime == "bf16":
        return Bf16Runner(encoder)
    onnx_path = export_onnx(encoder, identity, input_shape)
    threads = torch.get_num_threads()
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(onnx_path, threads)
    return OpenVinoRunner(onnx_path, threads, "bf16" if runtime == "openvino_bf16" else "f32")


# ---------------------------------------------------------------------------------------- auto
def _machine_key(identity: str, input_shape: Sequence[int]) -> str:
    """What makes an ``auto`` choice valid: this CPU, thread count, package versions, weights and shape."""
    cpu = cpu_model() or platform.processor() or platform.machine()
    versions = []
    for package in ("onnxruntime", "openvino"):
        try:
            from importlib.metadata import version

            versions.append(f"{package}={version(package)}")
        except Exception:  # noqa: BLE001 - not installed
            versions.append(f"{package}=none")
    parts = [cpu, f"threads={torch.get_num_threads()}", f"torch={torch.__version__}", *versions,
             identity, str(tuple(input_shape)), f"v{EXPORT_VERSION}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()).clamp_min(1))


def calibrate(
    runners: dict[str, EncoderRunner],
    frames: torch.Tensor,
    masks_from_features: Callable[[torch.Tensor], torch.Tensor],
    repeats: int = 1,
) -> dict[str, dict[str, float]]:
    """Seconds per frame and mask Dice against fp32 of each runner on ``frames`` (model input).

    ``masks_from_features`` turns encoder features into boolean masks (the backend decodes a
    few box prompts), so eligibility is judged on what a method uses, the masks, not on the
    embedding alone. The runners run interleaved, so a busy machine slows them alike.
    """
    reference = masks_from_features(runners["fp32"](frames))
    report: dict[str, dict[str, float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for name, runner in runners.items():  # warm-up and parity
        masks = masks_from_features(runner(frames))
        report[name] = {"dice_to_fp32": _dice(masks, reference)}
    for _ in range(repeats):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(frames)
            seconds[name].append((time.perf_counter() - start) / frames.shape[0])
    for name in runners:
        report[name]["seconds_per_frame"] = sorted(seconds[name])[len(seconds[name]) // 2]
    return report


def choose_auto(
    encoder: nn.Module,
    identity: str,
    frames: torch.Tensor,
    masks_from_features: Callable[[torch.Tensor], torch.Tensor],
) -> str:
    """The fastest available runtime whose masks stay within :data:`AUTO_MAX_DICE_DROP` of fp32's.

    The choice is stored per machine and weights in :func:`cache_dir`, so calibration (exports,
    a few encodes per runtime) happens once; delete ``auto-choices.json`` to measure again.
    """
    input_shape = tuple(frames.shape[1:])
    key = _machine_key(identity, (1, *input_shape))
    store = cache_dir() / "auto-choices.json"
    try:
        choices = json.loads(store.read_text())
    except (OSError, ValueError):
        choices = {}
    if key in choices and choices[key].get("runtime") in available_runtimes():
        return choices[key]["runtime"]
    runners = {}
    for name in available_runtimes():
        try:
            runners[name] = build_runner(encoder, name, identity, (1, *input_shape))
        except Exception as error:  # noqa: BLE001 - an engine that cannot export or compile this model is not a candidate
            logger.warning("encoder_runtime auto: %s left out, it could not be built here (%s: %s)",
                           name, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
            continue
    report = calibrate(runners, frames, masks_from_features)
    eligible = [n for n in runners if report[n]["dice_to_fp32"] >= 1 - AUTO_MAX_DICE_DROP]
    best = min(eligible, key=lambda n: report[n]["seconds_per_frame"])
    choices[key] = {"runtime": best, "report": report}
    store.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(store, lambda partial: Path(partial).write_text(json.dumps(choices, indent=1)))
    return best
