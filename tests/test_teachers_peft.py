"""LoRA on the image encoder (q and v of the fused qkv) and decoder adapters."""

from __future__ import annotations

import pytest
import torch
from test_teachers_parity import tiny_sam_vit  # same directory, on sys.path under pytest
from torch import nn

from samssl.foundation import EmbeddingCache, build_foundation_model, peft_tuning
from samssl.foundation.peft_tuning import SplitQKV

BOX = torch.tensor([[10.0, 12.0, 50.0, 54.0]])


def _image(size: int = 64) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("layout", ["blocked", "per_head"])
def test_split_qkv_reproduces_the_fused_projection(layout):
    heads, key_dim, value_dim = 3, 4, 8 if layout == "per_head" else 4
    fused = nn.Linear(10, heads * (2 * key_dim + value_dim))
    split = SplitQKV(fused, heads, key_dim, value_dim, layout)
    x = torch.randn(2, 7, 10)
    torch.testing.assert_close(split(x), fused(x))
    per_head = fused(x).view(2, 7, heads, -1) if layout == "per_head" else fused(x).view(2, 7, 3, heads, -1)[:, :, 0]
    torch.testing.assert_close(split.q(x).view(2, 7, heads, -1), per_head[..., :key_dim])
    refused = split.to_linear()
    assert torch.equal(refused.weight, fused.weight) and torch.equal(refused.bias, fused.bias)


def _lora_round_trip(build, image: torch.Tensor, tmp_path, save_and_load: bool = True) -> None:
    teacher = build()
    original = {k: v.clone() for k, v in teacher.state_dict().items()}
    frozen = teacher.decode(teacher.encode(image), boxes=BOX).mask_logits

    adapted = peft_tuning.apply_lora(teacher, rank=4)
    assert adapted > 0
    trainable = peft_tuning.trainable_parameters(teacher)
    assert trainable and all("lora_" in name for name in trainable)
    tuned_start = teacher.decode(teacher.encode(image, requires_grad=True), boxes=BOX).mask_logits
    torch.testing.assert_close(tuned_start.detach(), frozen)  # LoRA starts as the identity

    optimizer = torch.optim.SGD(trainable.values(), lr=0.5)
    tuned_start.sigmoid().mean().backward()
    for name, param in teacher.named_parameters():
        assert (param.grad is not None) == ("lora_" in name), name
    assert any(p.grad.abs().sum() > 0 for p in trainable.values())
    optimizer.step()
    for name, tensor in teacher.state_dict().items():  # frozen weights untouched by the step
        if "lora_" not in name:
            base_name = name.replace(".base_layer", "")
            if base_name in original:
                assert torch.equal(tensor, original[base_name]), name
    with torch.no_grad():
        tuned = teacher.decode(teacher.encode(image, requires_grad=True), boxes=BOX).mask_logits
    assert not torch.allclose(tuned, frozen)

    reloaded = teacher
    if save_and_load:
        path = peft_tuning.save_lora(teacher, tmp_path / "lora.pt")
        assert all("lora_" in k for k in torch.load(path, weights_only=True)["state_dict"])
        reloaded = peft_tuning.load_lora(build(), path)
        with torch.no_grad():
            again = reloaded.decode(reloaded.encode(image, requires_grad=True), boxes=BOX).mask_logits
        torch.testing.assert_close(again, tuned)

    identity = reloaded.weights_id
    peft_tuning.merge_lora(reloaded)
    assert set(reloaded.state_dict()) == set(original)  # original structure and keys are back
    assert not peft_tuning.trainable_parameters(reloaded)
    assert reloaded.weights_id != identity
    merged = reloaded.decode(reloaded.encode(image), boxes=BOX).mask_logits
    torch.testing.assert_close(merged, tuned, rtol=1e-4, atol=1e-4)


def test_lora_on_sam_vit(tmp_path):
    _lora_round_trip(tiny_sam_vit, _image(64) * 255, tmp_path)


def test_lora_on_litemedsam(tmp_path):
    # saving and loading is exercised on the small model above; here grads, freezing and merge
    _lora_round_trip(lambda: build_foundation_model("litemedsam"), _image(64), tmp_path, save_and_load=False)


def test_cache_refuses_while_lora_is_trainable():
    teacher = tiny_sam_vit()
    teacher.embedding_cache = EmbeddingCache()
    peft_tuning.apply_lora(teacher, rank=2)
    with pytest.raises(RuntimeError, match="trainable parameters"):
        teacher.encode(_image())


@pytest.mark.parametrize("build", [tiny_sam_vit, lambda: build_foundation_model("litemedsam")],
                         ids=["sam_vit", "litemedsam"])
def test_decoder_adapters_start_as_identity_and_train_alone(build, tmp_path):
    teacher = build()
    embeddings = teacher.encode(_image() * 255)
    before = teacher.decode(embeddings, boxes=BOX).mask_logits
    adapters = peft_tuning.add_decoder_adapters(teacher, bottleneck_ratio=0.25)
    assert len(adapters) == 2 * len(teacher.mask_decoder.transformer.layers)
    assert torch.equal(teacher.decode(embeddings, boxes=BOX).mask_logits, before)

    teacher.decode(embeddings, boxes=BOX).mask_logits.sigmoid().mean().backward()
    trainable = peft_tuning.trainable_parameters(teacher)
    assert trainable and all(".adapter." in name for name in trainable)
    assert all(p.grad is None for n, p in teacher.named_parameters() if n not in trainable)
    with torch.no_grad():
        for adapter in adapters:
            adapter.up.weight.normal_(0, 0.05)
    changed = teacher.decode(embeddings, boxes=BOX).mask_logits
    assert not torch.allclose(changed, before)

    path = peft_tuning.save_adapters(teacher, tmp_path / "adapters.pt")
    fresh = build()
    peft_tuning.load_adapters(fresh, path)
    torch.testing.assert_close(fresh.decode(embeddings, boxes=BOX).mask_logits, changed)
