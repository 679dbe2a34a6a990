"""Transforms of ``torch.nn`` modules that any layer may use (no other ``samssl`` package is imported).

Batch-norm folding serves two layers that may not import each other: the deployed segmentation
networks (``samssl.networks.deploy``) and the frozen foundation-model encoders
(``samssl.foundation.encoder_runtime``); its one home is here. So does normalising with a batch's
own statistics without touching the running buffers (the EMA teacher's ``batch_norm="batch"`` and
the tool that measures it).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["batch_statistics", "fold_batch_norm"]


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


@contextlib.contextmanager
def batch_statistics(network: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm layer of ``network`` normalises with the statistics of the batch
    it is given, whatever the network's mode, and leaves its running buffers as they were.

    The layers are put in train mode with ``momentum = 0`` (``running = 1 * running + 0 * batch``);
    their mode, momentum and ``num_batches_tracked`` are restored on exit. Other layers (dropout)
    keep their mode. A batch with one value per channel cannot be normalised on its own statistics
    (a single image through global pooling): the ``ValueError`` says so.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.training, m.momentum,
              None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.train(True)
        m.momentum = 0.0
    try:
        yield
    except ValueError as error:
        if "more than 1 value per channel" in str(error):
            raise ValueError("BatchNorm on batch statistics needs batches of two or more images "
                             f"(the batch's own statistics are undefined for one): {error}") from error
        raise
    finally:
        for m, training, momentum, tracked in saved:
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
