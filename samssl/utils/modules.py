"""Transforms of ``torch.nn`` modules that any layer may use (no other ``samssl`` package is imported).

Batch-norm folding serves two layers that may not import each other: the deployed segmentation
networks (``samssl.networks.deploy``) and the frozen foundation-model encoders
(``samssl.foundation.encoder_runtime``); its one home is here.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norm"]


def fold_batch_norm(network: nn.Module) -> nn.Module:
    """An eval-mode copy of ``network`` with every ``Conv2d -> BatchNorm2d`` pair of a Sequential folded.

    Each folded batch norm is replaced by ``nn.Identity`` so indices and names of the other
    modules stay as they were. Batch norms without running statistics (which normalise with
    batch statistics even in eval mode) are left in place. Outputs match the original network
    in eval mode up to float rounding.
    """
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for conv_name, norm_name in zip(names[:-1], names[1:]):
            conv, norm = module._modules[conv_name], module._modules[norm_name]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
                module._modules[norm_name] = nn.Identity()
    return folded
