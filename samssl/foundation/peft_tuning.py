"""Parameter-efficient tuning of a teacher: LoRA on the image encoder, adapters in the decoder.

**LoRA (via ``peft``).** SAM-family encoders compute q, k and v with one fused ``qkv``
Linear per attention block. SAMed and SFR put LoRA on the q and v projections only, which a
LoRA on the fused Linear cannot express (it would also adapt k). So each fused ``qkv`` is
first replaced by an exactly equivalent :class:`SplitQKV` module holding separate ``q``, ``k``
and ``v`` Linears (weights copied, outputs re-interleaved in the original layout), and peft
then targets ``qkv.q`` and ``qkv.v``. Two fused layouts exist: SAM's ViT stacks
``[q | k | v]``; TinyViT (LiteMedSAM) interleaves per head ``[q_h, k_h, v_h]``.
After tuning, :func:`merge_lora` folds the low-rank updates into the weights and fuses q/k/v
back into one Linear, so the model has its original structure and state-dict keys again.

**Decoder adapters (Medical SAM Adapter style).** A bottleneck MLP with a residual connection
(``y + up(act(down(y)))``) after the self-attention and the token-to-image cross-attention of
every two-way transformer block of the mask decoder. ``up`` starts at zero, so an adapted
teacher is exactly the frozen teacher until it is trained.

Both work on LiteMedSAM and SAM ViT (and the decoder adapters on SAM2 and SAM-Med3D too).
Only LoRA/adapter parameters are trainable; they are saved and loaded on their own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from samssl.foundation.base import PromptableSegmenter

QKVLayout = Literal["blocked", "per_head"]


# ---------------------------------------------------------------------------------- fused qkv
class SplitQKV(nn.Module):
    """A fused ``qkv`` Linear split into ``q``, ``k``, ``v`` Linears with the same output.

    Args:
        fused: the original Linear, output size ``num_heads * (2 * key_dim + value_dim)``.
        num_heads, key_dim, value_dim: head geometry.
        layout: ``"blocked"`` = ``[q | k | v]`` (SAM ViT), ``"per_head"`` = ``[q_h, k_h, v_h]``
            per head (TinyViT).
    """

    def __init__(self, fused: nn.Linear, num_heads: int, key_dim: int, value_dim: int, layout: QKVLayout) -> None:
        super().__init__()
        h, kd, vd = num_heads, key_dim, value_dim
        if fused.out_features != h * (2 * kd + vd):
            raise ValueError(f"qkv has {fused.out_features} outputs, expected {h} heads x (2 x {kd} + {vd})")
        self.num_heads, self.key_dim, self.value_dim, self.layout = h, kd, vd, layout
        weight, bias = fused.weight.detach(), None if fused.bias is None else fused.bias.detach()
        parts_w = self._split(weight)
        parts_b = self._split(bias) if bias is not None else (None, None, None)
        for name, w, b in zip(("q", "k", "v"), parts_w, parts_b):
            linear = nn.Linear(fused.in_features, w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                linear.weight.copy_(w)
                if b is not None:
                    linear.bias.copy_(b)
            linear.requires_grad_(fused.weight.requires_grad)
            setattr(self, name, linear)

    def _split(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, kd, vd = self.num_heads, self.key_dim, self.value_dim
        if self.layout == "blocked":
            return t[: h * kd], t[h * kd: 2 * h * kd], t[2 * h * kd:]
        per_head = t.reshape(h, 2 * kd + vd, *t.shape[1:])
        return (per_head[:, :kd].reshape(h * kd, *t.shape[1:]),
                per_head[:, kd:2 * kd].reshape(h * kd, *t.shape[1:]),
                per_head[:, 2 * kd:].reshape(h * vd, *t.shape[1:]))

    def _join(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Concatenate q, k, v along dim 0 in the fused layout (works on weights and outputs^T)."""
        if self.layout == "blocked":
            return torch.cat([q, k, v], 0)
        h, rest = self.num_heads, q.shape[1:]
        per_head = [t.reshape(h, -1, *rest) for t in (q, k, v)]
        return torch.cat(per_head, 1).reshape(-1, *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.layout == "blocked":
            return torch.cat([q, k, v], -1)
        lead = x.shape[:-1]
        per_head = [t.reshape(*lead, self.num_heads, -1) for t in (q, k, v)]
        return torch.cat(per_head, -1).reshape(*lead, -1)

    def to_linear(self) -> nn.Linear:
        """The equivalent fused Linear (use after LoRA has been merged into q/v)."""
        q, k, v = self.q, self.k, self.v
        fused = nn.Linear(q.in_features, q.out_features + k.out_features + v.out_features,
                          bias=q.bias is not None, device=q.weight.device, dtype=q.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(self._join(q.weight, k.weight, v.weight))
            if q.bias is not None:
                fused.bias.copy_(self._join(q.bias, k.bias, v.bias))
        fused.requires_grad_(q.weight.requires_grad)
        return fused


def _qkv_geometry(attention: nn.Module) -> tuple[int, int, int, QKVLayout] | None:
    """Head geometry of an attention module with a fused ``qkv`` Linear, or None."""
    qkv = getattr(attention, "qkv", None)
    if not isinstance(qkv, nn.Linear) or not hasattr(attention, "num_heads"):
        return None
    heads = attention.num_heads
    if hasattr(attention, "key_dim") and hasattr(attention, "d"):  # TinyViT
        return heads, attention.key_dim, attention.d, "per_head"
    dim = qkv.out_features // 3  # SAM ViT / SAM-Med3D
    return heads, dim // heads, dim // heads, "blocked"


def split_fused_qkv(encoder: nn.Module) -> int:
    """Replace every fused ``qkv`` Linear of ``encoder`` by a :class:`SplitQKV`; return the count."""
    count = 0
    for module in list(encoder.modules()):
        geometry = _qkv_geometry(module)
        if geometry is not None:
            module.qkv = SplitQKV(module.qkv, *geometry)
            count += 1
    return count


def fuse_split_qkv(encoder: nn.Module) -> int:
    """Inverse of :func:`split_fused_qkv`: turn every :class:`SplitQKV` back into one Linear."""
    count = 0
    for module in list(encoder.modules()):
        if isinstance(getattr(module, "qkv", None), SplitQKV):
            module.qkv = module.qkv.to_linear()
            count += 1
    return count


# ---------------------------------------------------------------------------------- LoRA
LORA_TARGET_PATTERN = r".*\.qkv\.({targets})$"


def apply_lora(teacher: PromptableSegmenter, rank: int = 4, alpha: float | None = None, dropout: float = 0.0,
               targets: tuple[str, ...] = ("q", "v")) -> int:
    """Add LoRA adapters to the image encoder's attention projections (in place).

    Args:
        teacher: a 2D SAM-family teacher (LiteMedSAM, SAM ViT).
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator (``alpha / r`` scales the update); default ``rank``.
        dropout: LoRA dropout.
        targets: which of ``q``, ``k``, ``v`` get LoRA (SAMed/SFR: q and v).

    Returns:
        The number of adapted Linear layers. Afterwards only LoRA parameters of the encoder
        are trainable; detach any embedding cache while tuning (the cache refuses otherwise),
        and encode with ``teacher.encode(images, requires_grad=True)``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not set(targets) <= {"q", "k", "v"} or not targets:
        raise ValueError(f"targets must be a non-empty subset of ('q', 'k', 'v'), got {targets}")
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    encoder = teacher.image_encoder
    if split_fused_qkv(encoder) == 0 and not any(isinstance(m, SplitQKV) for m in encoder.modules()):
        raise ValueError(f"{teacher.name}: no fused qkv attention found in the image encoder")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, lora_dropout=dropout,
                        target_modules=LORA_TARGET_PATTERN.format(targets="|".join(targets)), bias="none")
    inject_adapter_in_model(config, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad_("lora_" in name)
    teacher._lora_config = {"rank": rank, "alpha": config.lora_alpha, "dropout": dropout, "targets": list(targets)}
    return sum(1 for n, _ in encoder.named_modules() if n.endswith(tuple(f"qkv.{t}" for t in targets)))


def lora_state_dict(teacher: PromptableSegmenter) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors of the image encoder (what :func:`save_lora` writes)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(teacher.image_encoder).items()}


def save_lora(teacher: PromptableSegmenter, path: str | Path) -> Path:
    """Write LoRA weights and their configuration to one file (loadable with ``weights_only``)."""
    config = getattr(teacher, "_lora_config", None)
    if config is None:
        raise ValueError(f"{teacher.name} has no LoRA adapters to save (call apply_lora first)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "lora-image-encoder/1", "teacher": teacher.name, "config": config,
                "state_dict": lora_state_dict(teacher)}, path)
    return path


def load_lora(teacher: PromptableSegmenter, path: str | Path) -> PromptableSegmenter:
    """Add LoRA adapters saved by :func:`save_lora` to a freshly built teacher."""
    from peft import set_peft_model_state_dict

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "lora-image-encoder/1":
        raise ValueError(f"{path} is not a LoRA file written by save_lora")
    if payload["teacher"] != teacher.name:
        raise ValueError(f"{path} holds LoRA weights for {payload['teacher']!r}, not {teacher.name!r}")
    config = payload["config"]
    apply_lora(teacher, rank=config["rank"], alpha=config["alpha"], dropout=config["dropout"],
               targets=tuple(config["targets"]))
    result = set_peft_model_state_dict(teacher.image_encoder, payload["state_dict"])
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: LoRA keys do not fit {teacher.name} (e.g. {unexpected[:3]})")
    return teacher


def merge_lora(teacher: PromptableSegmenter) -> PromptableSegmenter:
    """Fold LoRA into the encoder weights and restore the fused ``qkv`` layout (for inference).

    The teacher's ``weights_id`` changes, so embeddings cached for the original weights are
    never reused for the merged model.
    """
    from peft.tuners.lora import LoraLayer

    encoder = teacher.image_encoder
    config = getattr(teacher, "_lora_config", None)
    if config is None:
        raise ValueError(f"{teacher.name} has no LoRA adapters to merge")
    digest = _digest(lora_state_dict(teacher))
    for module in list(encoder.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(module, child_name, child.get_base_layer())
    fuse_split_qkv(encoder)
    encoder.requires_grad_(False)
    teacher.weights_id = f"{teacher.weights_id}+lora:{digest}"
    teacher._encoder_weights_id = None  # the encoder's weights changed: its embeddings are new ones
    del teacher._lora_config
    return teacher


def _digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------- adapters
class Adapter(nn.Module):
    """Bottleneck adapter ``y + up(act(down(y)))``; zero-initialised ``up`` = identity at start."""

    def __init__(self, dim: int, bottleneck_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = max(1, int(dim * bottleneck_ratio))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.act(self.down(y)))


class Adapted(nn.Module):
    """Runs the wrapped module, then an :class:`Adapter` on its output."""

    def __init__(self, module: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.module = module
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.adapter(self.module(*args, **kwargs))


DECODER_ADAPTER_SITES = ("self_attn", "cross_attn_token_to_image")


def add_decoder_adapters(teacher: PromptableSegmenter, bottleneck_ratio: float = 0.25) -> list[Adapter]:
    """Insert adapters after the token self-attention and token-to-image cross-attention of
    every two-way transformer block in the mask decoder; return them (all trainable)."""
    transformer = getattr(teacher.mask_decoder, "transformer", None)
    layers = getattr(transformer, "layers", None)
    if layers is None:
        raise ValueError(f"{teacher.name}: mask decoder has no two-way transformer layers to adapt")
    adapters = []
    for block in layers:
        for site in DECODER_ADAPTER_SITES:
            attention = getattr(block, site)
            if isinstance(attention, Adapted):
                raise ValueError(f"{teacher.name}: the decoder already has adapters")
            dim = attention.out_proj.out_features
            ref = attention.out_proj.weight
            adapter = Adapter(dim, bottleneck_ratio).to(device=ref.device, dtype=ref.dtype)
            setattr(block, site, Adapted(attention, adapter))
            adapters.append(adapter)
    teacher._adapter_ratio = bottleneck_ratio
    return adapters


def adapter_state_dict(teacher: PromptableSegmenter) -> dict[str, torch.Tensor]:
    """Adapter tensors only, keyed by their path inside the mask decoder."""
    return {k: v.detach().cpu() for k, v in teacher.mask_decoder.state_dict().items() if ".adapter." in k}


def save_adapters(teacher: PromptableSegmenter, path: str | Path) -> Path:
    state = adapter_state_dict(teacher)
    if not state:
        raise ValueError(f"{teacher.name} has no decoder adapters to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "decoder-adapters/1", "teacher": teacher.name,
                "bottleneck_ratio": float(teacher._adapter_ratio), "state_dict": state}, path)
    return path


def load_adapters(teacher: PromptableSegmenter, path: str | Path) -> list[Adapter]:
    """Add decoder adapters saved by :func:`save_adapters` to a freshly built teacher."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "decoder-adapters/1":
        raise ValueError(f"{path} is not a decoder-adapter file written by save_adapters")
    if payload["teacher"] != teacher.name:
        raise ValueError(f"{path} holds adapters for {payload['teacher']!r}, not {teacher.name!r}")
    adapters = add_decoder_adapters(teacher, payload["bottleneck_ratio"])
    missing, unexpected = teacher.mask_decoder.load_state_dict(payload["state_dict"], strict=False)
    bad = [k for k in missing if ".adapter." in k] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: adapter keys do not fit {teacher.name} (e.g. {bad[:3]})")
    return adapters


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter for everything that will receive gradients (for optimisers and checks)."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}
