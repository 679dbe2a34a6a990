"""Shared networks: shapes, parameter counts from the architecture, input checks, dropout modes."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNet

from samssl.networks import UNet2D, VNet
from samssl.networks.vnet import NORMALIZATIONS


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _vnet_params_from_architecture(n_channels=1, n_classes=2, f=16, norm_affine=True) -> int:
    """Parameter count written out from the papers' V-Net description, layer by layer."""

    def conv(k, c_in, c_out):  # weights + bias (+ norm scale and shift)
        return k**3 * c_in * c_out + c_out + (2 * c_out if norm_affine else 0)

    def stage(n_convs, c_in, c_out):
        return conv(3, c_in, c_out) + (n_convs - 1) * conv(3, c_out, c_out)

    encoder = stage(1, n_channels, f) + stage(2, 2 * f, 2 * f) + stage(3, 4 * f, 4 * f)
    encoder += stage(3, 8 * f, 8 * f) + stage(3, 16 * f, 16 * f)
    downs = conv(2, f, 2 * f) + conv(2, 2 * f, 4 * f) + conv(2, 4 * f, 8 * f) + conv(2, 8 * f, 16 * f)
    ups = conv(2, 16 * f, 8 * f) + conv(2, 8 * f, 4 * f) + conv(2, 4 * f, 2 * f) + conv(2, 2 * f, f)
    decoder = stage(3, 8 * f, 8 * f) + stage(3, 4 * f, 4 * f) + stage(2, 2 * f, 2 * f) + stage(1, f, f)
    out_conv = f * n_classes + n_classes
    return encoder + downs + ups + decoder + out_conv


def test_unet2d_shape_and_parameters():
    model = UNet2D().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 2, 256, 256)
    assert _n_params(model) == 1_979_042  # the figure in the module docstring
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="6 entries"):
        UNet2D(features=(16, 32, 64))


def test_unet2d_checkpoint_loads_into_basic_unet():
    model = UNet2D(features=(8, 8, 16, 32, 64, 8)).eval()
    plain = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(8, 8, 16, 32, 64, 8), norm="batch")
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), model(x))


def test_vnet_parameter_count_matches_the_architecture():
    model = VNet()
    expected = _vnet_params_from_architecture()
    assert _n_params(model) == expected
    assert abs(expected - 9.45e6) / 9.45e6 < 0.02  # the papers' ~9.45M
    assert _n_params(VNet(normalization="none")) == _vnet_params_from_architecture(norm_affine=False)
    # Additive skips: the first decoder conv sees 8 * f channels, not 16 * f as with concatenation.
    assert model.block_six[0].in_channels == 128


def test_vnet_forward_shapes_and_features():
    model = VNet(n_channels=1, n_classes=2).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        logits, features = model.forward_with_features(x)
        assert logits.shape == (1, 2, 32, 32, 32) and features.shape == (1, 16, 32, 32, 32)
        torch.testing.assert_close(model.out_conv(features), logits)
        torch.testing.assert_close(model(x), logits)
        # The papers' LA patch (about 1 s on 2 CPU threads without gradients).
        assert model(torch.randn(1, 1, 112, 112, 80)).shape == (1, 2, 112, 112, 80)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_vnet_normalizations(normalization):
    model = VNet(n_filters=16, normalization=normalization)  # train mode: norms use batch statistics
    with torch.no_grad():  # 32^3 because instance norm needs more than one bottleneck voxel
        assert model(torch.randn(2, 1, 32, 32, 32)).shape == (2, 2, 32, 32, 32)


def test_vnet_rejects_bad_configuration_and_inputs():
    model = VNet()
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.randn(1, 1, 30, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W, D\)"):
        model(torch.randn(1, 32, 32, 32))
    with pytest.raises(ValueError, match="normalization"):
        VNet(normalization="layernorm")
    with pytest.raises(ValueError, match="multiple"):
        VNet(n_filters=8, normalization="groupnorm")


def test_vnet_channels_last_is_the_same_network_in_another_memory_order():
    torch.manual_seed(0)
    reference = VNet().eval()
    fast = VNet(channels_last=True).eval()
    fast.load_state_dict(reference.state_dict())  # a checkpoint of either layout loads into the other
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in fast.parameters() if p.ndim == 5)
    x = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():
        out = fast(x)  # (the output's layout is the kernels' choice; its values are the contract)
        torch.testing.assert_close(out, reference(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.jit.script(fast)(x), out, rtol=1e-4, atol=1e-4)  # the model.ts export
    fast.train()
    fast(x).sum().backward()  # gradients in the same layout as their weights
    assert fast.block_one[0].weight.grad.is_contiguous(memory_format=torch.channels_last_3d)


def test_vnet_dropout_only_in_train_mode():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16)
    model = VNet(has_dropout=True)
    with torch.no_grad():
        model.train()  # batch-norm statistics of the batch: deterministic, so any change is dropout
        assert not torch.allclose(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x))

        no_dropout = VNet(has_dropout=False).train()
        torch.testing.assert_close(no_dropout(x), no_dropout(x))


def test_pretrained_backbone_file_loads_and_a_wrong_one_is_refused(tmp_path):
    from torchvision.models import mobilenet_v2, resnet18

    from samssl.networks import load_backbone_state_dict

    torch.manual_seed(0)
    imagenet_like = mobilenet_v2(weights=None)
    good = tmp_path / "mobilenet_v2.pth"  # a training checkpoint: nested, DataParallel's "module." prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in imagenet_like.state_dict().items()}}, good)
    backbone = mobilenet_v2(weights=None, num_classes=7)  # another head: its keys are dropped, not refused
    head = backbone.classifier[1].weight.clone()
    load_backbone_state_dict(backbone, good, option="encoder_weights", architecture="torchvision MobileNetV2",
                             head_prefixes=("classifier.",))
    torch.testing.assert_close(backbone.features[0][0].weight, imagenet_like.features[0][0].weight)
    torch.testing.assert_close(backbone.features[-1][0].weight, imagenet_like.features[-1][0].weight)
    torch.testing.assert_close(backbone.classifier[1].weight, head)  # the module's own head untouched

    wrong = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="encoder_weights .* is not a torchvision MobileNetV2 state dict"):
        load_backbone_state_dict(mobilenet_v2(weights=None), wrong, option="encoder_weights",
                                 architecture="torchvision MobileNetV2", head_prefixes=("classifier.",))
    with pytest.raises(FileNotFoundError, match="backbone_weights file not found"):
        load_backbone_state_dict(torch.nn.Linear(1, 1), tmp_path / "missing.pth", option="backbone_weights",
                                 architecture="ResNet-50")
