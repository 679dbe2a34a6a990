"""UAMT building blocks: the dual-head student, the mixture-entropy map and the patch exchange."""

from __future__ import annotations

import math

import pytest
import torch
from bundle_testing import bundle_fixture, use_bundle  # same directory, on sys.path under pytest

BUNDLE = use_bundle("uamt_skin")
_bundle_scripts = bundle_fixture("uamt_skin")

from scripts.network import DeployedWeights, DualHeadDeepLabV3, build_student  # noqa: E402
from scripts.uncertainty import mixture_entropy, patch_uncertainty, uncertainty_guided_mix  # noqa: E402


def test_dual_head_shapes_and_switch():
    x = torch.rand(2, 3, 64, 64)
    net = DualHeadDeepLabV3(output_stride=16, aux_head=True).eval()
    with torch.no_grad():
        main = net(x)
        main2, aux = net(x, return_aux=True)
    assert main.shape == (2, 2, 64, 64) and aux.shape == (2, 2, 64, 64)
    assert torch.allclose(main, main2)
    single = DualHeadDeepLabV3(output_stride=16, aux_head=False).eval()
    with torch.no_grad():
        _, none = single(x, return_aux=True)
    assert none is None and not single.has_aux_head
    # the deployed model is the same architecture with or without the training-only FCN head
    missing, unexpected = single.load_state_dict(net.state_dict(), strict=False)
    assert not missing and all(k.startswith("fcn_head.") for k in unexpected)


def test_bad_output_stride_and_missing_backbone_file(tmp_path):
    with pytest.raises(ValueError, match="output_stride"):
        DualHeadDeepLabV3(output_stride=4)
    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        DualHeadDeepLabV3(backbone_weights=str(tmp_path / "missing.pth"))


def test_tinyvit_student_starts_from_litemedsam_trains_its_encoder_and_deploys_without_the_aux_head():
    from samssl.foundation import build_foundation_model

    sam = build_foundation_model("litemedsam")
    net = build_student("litemedsam_tinyvit", aux_head=True)
    reference = sam.image_encoder.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in net.encoder.state_dict().items())  # pretrained start
    x = torch.rand(2, 3, 96, 128)  # not square: the padded-input geometry is undone
    main, aux = net.train()(x, return_aux=True)
    assert main.shape == (2, 2, 96, 128) and aux.shape == (2, 2, 96, 128)
    (main.logsumexp(1).mean() + aux.logsumexp(1).mean()).backward()
    assert net.encoder.patch_embed.seq[0].c.weight.grad is not None  # the encoder is fine-tuned
    assert sam.image_encoder.patch_embed.seq[0].c.weight.grad is None  # the teacher's own copy is untouched
    deployed = build_student("litemedsam_tinyvit", aux_head=False).eval()
    deployed.load_state_dict(DeployedWeights(net).state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(deployed(x), net.eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="student must be one of"):
        build_student("resnet18")
    with pytest.raises(ValueError, match="LiteMedSAM's own weights"):
        build_student("litemedsam_tinyvit", backbone_weights="imagenet.pth")


def test_mixture_entropy_bounds():
    confident = torch.tensor([[[[10.0]], [[-10.0]]]])  # (1, 2, 1, 1) strongly class 0
    assert mixture_entropy(confident, confident).item() < 1e-3
    # student sure of class 0, teacher sure of class 1: the mixture is 50/50, entropy ln 2
    opposite = -confident
    assert mixture_entropy(confident, opposite).item() == pytest.approx(math.log(2), abs=1e-4)
    with pytest.raises(ValueError, match="shape"):
        mixture_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))


def test_patch_exchange_moves_trusted_patches_of_the_next_image():
    b, grid, size = 2, 2, 8
    images = torch.stack([torch.full((3, size, size), float(i)) for i in range(b)])
    targets = torch.stack([torch.full((1, size, size), float(10 + i)) for i in range(b)])
    uncertainty = torch.zeros(b, size, size)
    uncertainty[0, :4, :4] = 1.0  # image 0: top-left patch is the most uncertain
    uncertainty[1, 4:, 4:] = -1.0  # image 1: bottom-right patch is the most trusted
    mixed, mixed_t = uncertainty_guided_mix(images, targets, uncertainty, grid_size=grid, num_patches=1)
    # image 0's uncertain top-left patch now holds image 1's content and pseudo-label
    assert torch.all(mixed[0, :, :4, :4] == 1.0) and torch.all(mixed_t[0, :, :4, :4] == 11.0)
    # the rest of image 0 is untouched, and the inputs were not modified in place
    assert torch.all(mixed[0, :, 4:, :] == 0.0) and torch.all(images[0] == 0.0)
    assert patch_uncertainty(uncertainty, grid).shape == (b, grid * grid)


def test_patch_exchange_rejects_bad_grids():
    images, targets, u = torch.zeros(1, 3, 10, 10), torch.zeros(1, 1, 10, 10), torch.zeros(1, 10, 10)
    with pytest.raises(ValueError, match="divisible"):
        uncertainty_guided_mix(images, targets, u, grid_size=4, num_patches=1)
    with pytest.raises(ValueError, match="num_patches"):
        uncertainty_guided_mix(torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8), grid_size=2, num_patches=3)
