r"""The per-iteration weight updates of every bundle's network: optimiser step as a loop vs fused.

Every semi-supervised iteration ends with an optimiser step and an EMA teacher update over all of
the student's tensors. PyTorch's CPU default for the optimisers is a Python loop of several small
kernels per parameter; ``fused=True`` (what the bundles' configs use) does the same arithmetic
in one kernel per step. This times both, per bundle network, side by side in one run, next to
the EMA update (two in-place operations per tensor; batching it with ``torch._foreach_*`` was
measured no faster on CPU, so it stays a plain loop)::

    python tools/benchmark_updates.py --threads 2

The whole-iteration effect is measured by ``tools/profile_training.py --compare "optimizer#fused=false"``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from samssl.networks import EMATeacher, VNet
from samssl.utils.bundles import import_bundle_scripts

ROOT = Path(__file__).resolve().parents[1]


def _deeplab() -> nn.Module:
    network = import_bundle_scripts(ROOT / "bundles" / "uamt_skin", "scripts.network")
    return network.DualHeadDeepLabV3(output_stride=16)


def _mobilenet_unet() -> nn.Module:
    network = import_bundle_scripts(ROOT / "bundles" / "samkd_dualtask_skin", "scripts.mobilenet_unet")
    return network.MobileNetDualTaskUNet()


# bundle -> (network, optimiser class and its arguments as in the bundle's train.json)
NETWORKS: dict[str, tuple[Callable[[], nn.Module], type, dict]] = {
    "uamt_skin": (_deeplab, torch.optim.AdamW, {"lr": 1e-4, "weight_decay": 0.01}),
    "samkd_dualtask_skin": (_mobilenet_unet, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}),
    "semisam_la / sfr_la": (lambda: VNet(has_dropout=True), torch.optim.SGD,
                            {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}),
}


def _median_ms(function: Callable[[int], None], repeats: int) -> float:
    function(0)  # warm-up
    durations = []
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        function(step)
        durations.append(time.perf_counter() - start)
    return 1000 * statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per cell (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    lines = ["| network (bundle) | parameters | EMA teacher update | optimiser step: loop (CPU default) | fused |",
             "|---|---:|---:|---:|---:|"]
    for bundle, (build, optimiser_class, options) in NETWORKS.items():
        network = build()
        for parameter in network.parameters():
            parameter.grad = torch.randn_like(parameter)
        ema = EMATeacher(network, decay=0.99)
        cells = [_median_ms(ema.update, args.repeats)]
        for fused in (False, True):
            optimiser = optimiser_class(network.parameters(), fused=fused, **options)
            cells.append(_median_ms(lambda s: optimiser.step(), args.repeats))
        count = sum(p.numel() for p in network.parameters()) / 1e6
        lines.append(f"| {type(network).__name__} ({bundle}) | {count:.1f} M | "
                     + " | ".join(f"{c:.0f} ms" for c in cells) + " |")
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    print(f"\nmedian of {args.repeats} calls after a warm-up, {args.threads} threads")
    print(f"command: python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
