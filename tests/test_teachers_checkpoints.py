"""Checkpoint files: wrong files fail with errors that name the expected and the found model."""

from __future__ import annotations

import argparse

import pytest
import torch

from samssl.foundation import build_foundation_model
from samssl.foundation.checkpoints import (
    KNOWN_CHECKPOINTS,
    check_checkpoint_file,
    describe_state_dict,
    read_state_dict,
)
from samssl.foundation.litemedsam import packaged_checkpoint_path


@pytest.fixture(scope="module")
def litemedsam_state() -> dict[str, torch.Tensor]:
    return read_state_dict(packaged_checkpoint_path(), KNOWN_CHECKPOINTS["litemedsam"])


def test_missing_file_says_where_weights_come_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="SAM ViT-B checkpoint not found.*nothing is downloaded"):
        build_foundation_model("sam_vit_b", checkpoint=tmp_path / "sam_vit_b_01ec64.pth")


def test_a_litemedsam_file_passed_as_sam2_names_both_models(tmp_path, litemedsam_state):
    path = tmp_path / "weights.pt"
    torch.save({"model": litemedsam_state}, path)
    with pytest.raises(ValueError, match=r"not a SAM2\.1 Hiera-T checkpoint: it looks like a TinyViT SAM"):
        build_foundation_model("sam2.1_hiera_t", checkpoint=path)


def test_truncated_official_file_and_size_of_another_model(tmp_path):
    truncated = tmp_path / "sam_vit_b_01ec64.pth"
    truncated.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="official SAM ViT-B checkpoint but 1,000 bytes instead of 375,042,383"):
        check_checkpoint_file(truncated, KNOWN_CHECKPOINTS["sam_vit_b"])
    mobile = tmp_path / "lite.pth"
    with mobile.open("wb") as handle:  # sparse file of MobileSAM's exact size
        handle.truncate(KNOWN_CHECKPOINTS["mobile_sam"].size_bytes)
    with pytest.raises(ValueError, match="exact size of the MobileSAM checkpoint"):
        build_foundation_model("litemedsam", checkpoint=mobile)


def test_pickled_objects_are_refused_unless_allowed(tmp_path, litemedsam_state):
    path = tmp_path / "trainer.pth"
    # training scripts often store their argparse namespace next to the weights
    torch.save({"model": litemedsam_state, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        build_foundation_model("litemedsam", checkpoint=path)
    teacher = build_foundation_model("litemedsam", checkpoint=path, allow_pickle=True)
    assert teacher.weights_id.startswith("sha256:")


def test_fine_tuned_litemedsam_loads_strictly_and_gets_its_own_identity(tmp_path, litemedsam_state):
    path = tmp_path / "finetuned.pth"
    torch.save(litemedsam_state, path)
    packaged, finetuned = build_foundation_model("litemedsam"), build_foundation_model("litemedsam", checkpoint=path)
    for name, tensor in finetuned.state_dict().items():
        assert torch.equal(tensor, packaged.state_dict()[name])
    assert finetuned.weights_id != packaged.weights_id  # a different file, a different cache namespace


def test_state_dict_descriptions():
    assert describe_state_dict({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}) == "SAM ViT-B"
    assert describe_state_dict({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 1, 16, 16, 16)}) == "SAM-Med3D"
    hiera = {f"image_encoder.trunk.blocks.{i}.attn.qkv.weight": torch.zeros(1) for i in range(12)}
    assert describe_state_dict({**hiera, "no_obj_embed_spatial": torch.zeros(1)}).startswith("SAM2.1 Hiera-T")
