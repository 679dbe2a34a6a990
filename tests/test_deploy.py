"""Inference forms of a trained network: batch-norm folding and the TorchScript export with bundle metadata.

The library functions are tested on a small network defined here that has what a deployed 2D
network gives them: convolution -> batch norm pairs (plain, bias-free 1x1, depthwise) inside nested
``Sequential`` blocks held in a ``ModuleList``, ``channels_last`` weights and a second (dual) output.
The samkd bundle checks the same on its own MobileNet main network (tests/test_samkd_components.py).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from monai.data import load_net_with_metadata
from torch import nn

from samssl.networks import export_torchscript, fold_batch_norm


class SmallDualTaskNet(nn.Module):
    """Two stages (a strided conv, a separable 1x1 -> depthwise 3x3 -> 1x1 block), mask logits and a tanh SDF."""

    def __init__(self, channels_last: bool = True) -> None:
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            nn.Sequential(
                nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU6()),  # nested, conv with a bias
            ),
        ])
        self.mask = nn.Conv2d(16, 2, 1)
        self.sdf = nn.Conv2d(16, 1, 1)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_dual(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._features(x)
        size = x.shape[-2:]
        return (F.interpolate(self.mask(features).contiguous(), size=size, mode="bilinear", align_corners=False),
                F.interpolate(torch.tanh(self.sdf(features)).contiguous(), size=size, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self._features(x)
        return F.interpolate(self.mask(features).contiguous(), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _trained_looking(network: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine terms, as training would."""
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(c, generator=generator) - 0.5)
    return network.eval()


def _count(network: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in network.modules())


def test_folding_removes_every_batch_norm_after_a_convolution_and_keeps_the_outputs():
    network = _trained_looking(SmallDualTaskNet())
    folded = fold_batch_norm(network)
    assert _count(network, nn.BatchNorm2d) == 4 and _count(folded, nn.BatchNorm2d) == 0
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        expected, (logits, sdf) = network.forward_dual(x), folded.forward_dual(x)
    scale = expected[0].abs().max()
    assert scale > 1e-3  # the comparison below is not between two near-zero tensors
    assert torch.allclose(logits, expected[0], atol=1e-4 * scale) and torch.allclose(sdf, expected[1], atol=1e-5)
    # The copy keeps the network's channels_last weights; the original is untouched.
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in folded.parameters() if p.ndim == 4)
    assert set(network.state_dict()) == set(SmallDualTaskNet().state_dict())
    assert _count(network, nn.BatchNorm2d) == 4


def test_only_convolution_then_batch_norm_pairs_with_running_statistics_are_folded():
    batch_stats = nn.BatchNorm2d(4, track_running_stats=False)
    network = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),  # folded
        nn.ReLU(), nn.BatchNorm2d(4),  # no convolution before it: kept
        nn.Conv2d(4, 4, 1), batch_stats,  # normalises with batch statistics even in eval mode: kept
    ).train()
    folded = fold_batch_norm(network)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.BatchNorm2d)
    assert isinstance(folded[6], nn.BatchNorm2d) and not folded.training
    assert network.training and isinstance(network[1], nn.BatchNorm2d)  # the training network is unchanged
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), network.eval()(x), atol=1e-5)


def test_export_writes_a_folded_torchscript_with_bundle_metadata(tmp_path):
    network = _trained_looking(SmallDualTaskNet())
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"name": "test bundle", "version": "0.1.0"}))
    config = tmp_path / "inference.json"
    config.write_text(json.dumps({"network_def": {"_target_": "scripts.mobilenet_unet.MobileNetDualTaskUNet"}}))

    written = export_torchscript(network, tmp_path / "out" / "model", meta_file=meta, config_files=[config])
    assert written == tmp_path / "out" / "model.ts" and written.is_file()
    scripted, loaded_meta, extra = load_net_with_metadata(str(written), more_extra_files=["inference.json"])
    assert loaded_meta["name"] == "test bundle" and json.loads(extra["inference.json"])["network_def"]
    assert not any(m.original_name == "BatchNorm2d" for m in scripted.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(scripted(x), network(x), atol=1e-4 * network(x).abs().max())
    assert network.training is False and _count(network, nn.BatchNorm2d) == 4  # not modified

    # a bundle's own inference.json is embedded whole: merged onto its shared base_inference.json
    (tmp_path / "base_inference.json").write_text(json.dumps({"postprocessing": {"_target_": "Compose"}, "network_def": None}))
    config.write_text(json.dumps({"_comment_base": "merged onto base_inference.json", **json.loads(config.read_text())}))
    merged = export_torchscript(network, tmp_path / "merged.ts", config_files=[config])
    _, _, extra = load_net_with_metadata(str(merged), more_extra_files=["inference.json"])
    assert json.loads(extra["inference.json"]) == {"postprocessing": {"_target_": "Compose"},
                                                   "network_def": {"_target_": "scripts.mobilenet_unet.MobileNetDualTaskUNet"}}

    unfolded = export_torchscript(network, tmp_path / "plain.ts", fold=False)
    assert any(m.original_name == "BatchNorm2d" for m in torch.jit.load(str(unfolded)).modules())
    with pytest.raises(ValueError, match="JSON"):
        export_torchscript(network, tmp_path / "x.ts", config_files=[tmp_path / "inference.yaml"])
