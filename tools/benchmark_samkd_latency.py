"""Parameters and CPU latency of the dual-task SAM-distillation bundle's networks at 256 x 256.

The paper (Huynh et al., Table 3) reports 2.9M parameters and 0.02 s per image for its
MobileNet main network. This script measures, with batch 1 and a fixed number of CPU threads:

* the main network (MobileNetV2 U-Net, dual head; ``forward`` = the deployed mask output),
  eager and as the frozen TorchScript module that ``ckpt_export`` produces;
* the 2D UNet baseline shared by the 2D bundles (``common.networks.UNet2D``);
* the teacher network (LiteMedSAM's TinyViT encoder + decoder + dual head; encoder included).

The main network and the UNet are built with random weights (weights do not change their cost);
the teacher uses LiteMedSAM's packaged TinyViT weights (random ViT weights can hit slow
denormal arithmetic and would overstate its cost).
Usage (the figures in bundles/samkd_dualtask_skin/docs/README.md):

    OMP_NUM_THREADS=2 python tools/benchmark_samkd_latency.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.networks import MobileNetDualTaskUNet, UNet2D, ViTDualTaskNet  # noqa: E402
from common.teachers import build_teacher  # noqa: E402


def latency_ms(fn, x: torch.Tensor, warmup: int, repeats: int) -> tuple[float, float]:
    """Median and interquartile range of single-call wall time, in milliseconds."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1000)
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size)

    main_net = MobileNetDualTaskUNet().eval()
    scripted = torch.jit.freeze(torch.jit.script(main_net))
    unet = UNet2D().eval()
    teacher = ViTDualTaskNet(build_teacher("litemedsam"), freeze_encoder=False).eval()
    rows = [
        ("main network (MobileNetV2 U-Net, eager)", main_net, main_net),
        ("main network (TorchScript, frozen)", main_net, scripted),
        ("2D UNet baseline (common.networks.UNet2D)", unet, unet),
        ("teacher network (TinyViT encoder + decoder)", teacher, lambda t: teacher(t)[0]),
    ]
    print(f"batch 1, {args.size}x{args.size}, {torch.get_num_threads()} CPU threads, median of {args.repeats} calls")
    print("| network | parameters (M) | latency (ms) | IQR (ms) |")
    print("|---|---:|---:|---:|")
    for name, module, fn in rows:
        params = sum(p.numel() for p in module.parameters()) / 1e6
        median, iqr = latency_ms(fn, x, args.warmup, args.repeats)
        print(f"| {name} | {params:.2f} | {median:.1f} | {iqr:.1f} |")
    print("paper (Table 3): 2.9M parameters, 0.02 s per image; target here: <= 3.0M and <= 25 ms")
    print("command: OMP_NUM_THREADS=%d python tools/benchmark_samkd_latency.py --threads %d --size %d"
          % (args.threads, args.threads, args.size))


if __name__ == "__main__":
    main()
