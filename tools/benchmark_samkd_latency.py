"""Parameters and CPU latency of the dual-task SAM-distillation bundle's networks at 256 x 256.

The paper (Huynh et al., Table 3) reports 2.9M parameters and 0.02 s per image for its
MobileNet main network. This script measures, with batch 1 and a fixed number of CPU threads,
the main network (MobileNetV2 U-Net, dual head; ``forward`` = the deployed mask output) in the
forms a user meets it:

* NCHW eager: PyTorch's default memory layout (``channels_last=False``), for reference;
* eager: the network as trained (NHWC weights and activations, the default);
* folded eager: batch norms folded into the convolutions, as ``inference.json`` and
  ``evaluate.json`` run it;
* TorchScript: the file that the bundle's ``run export`` writes (folded, scripted), loaded back;

next to the 2D UNet baseline shared by the 2D bundles (``samssl.networks.UNet2D``) and the
teacher network (LiteMedSAM's TinyViT encoder + decoder + dual head; encoder included). The
main-network forms and the UNet are timed round-robin, a few calls each in turn, so that the
machine's drift affects them alike and their ratios hold; the teacher (~100x slower) is timed
on its own with fewer calls. A second table times one training step of the main network
(forward_dual, backward, AdamW as the bundle trains; the CPU preset's 4 + 4 images) in both memory layouts.

Random weights (weights do not change the cost of these networks); the teacher uses
LiteMedSAM's packaged TinyViT weights (random ViT weights can hit slow denormal arithmetic and
would overstate its cost). Usage (the figures in bundles/samkd_dualtask_skin/docs/README.md):

    OMP_NUM_THREADS=2 python tools/benchmark_samkd_latency.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from samssl.foundation import build_foundation_model
from samssl.networks import UNet2D, export_torchscript, fold_batch_norm
from samssl.utils.bundles import import_bundle_scripts

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "samkd_dualtask_skin"
TARGET_MS = 25.0


def round_robin_ms(
    calls: dict[str, Callable[[], object]], warmup: int, repeats: int, block: int = 5
) -> dict[str, tuple[float, float]]:
    """Median and interquartile range of each call's wall time (ms), the calls interleaved.

    Rounds visit every call in turn; each visit makes one untimed call (the network's weights
    back in cache, as in a server that runs one model) and then ``block`` timed ones, until
    each call has ``repeats`` timings. Drift of the machine thus hits all calls alike.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    while any(len(t) < repeats for t in times.values()):
        for name, call in calls.items():
            call()
            for _ in range(min(block, repeats - len(times[name]))):
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
    summary = {}
    for name, values in times.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0], values[0], values[0])
        summary[name] = (statistics.median(values), q[2] - q[0])
    return summary


def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _training_step(network: torch.nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits, sdf = network.forward_dual(batch)
        (logits.square().mean() + sdf.square().mean()).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--train_repeats", type=int, default=8)
    parser.add_argument("--train_batch", type=int, default=8, help="images per training step (CPU preset: 4 + 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size)
    # The bundle's own networks, as its configs build them (its `scripts`, as under monai.bundle run).
    MobileNetDualTaskUNet = import_bundle_scripts(BUNDLE, "scripts.mobilenet_unet").MobileNetDualTaskUNet
    ViTDualTaskNet = import_bundle_scripts(BUNDLE, "scripts.vit_dual_task").ViTDualTaskNet

    main_net = MobileNetDualTaskUNet().eval()
    nchw_net = MobileNetDualTaskUNet(channels_last=False).eval()
    nchw_net.load_state_dict(main_net.state_dict())
    folded = fold_batch_norm(main_net)
    with tempfile.TemporaryDirectory() as tmp:
        scripted = torch.jit.load(str(export_torchscript(main_net, Path(tmp) / "model.ts")))
    unet = UNet2D().eval()
    rows = {
        "main network, NCHW eager (PyTorch default layout)": (nchw_net, nchw_net),
        "main network, eager (as trained: NHWC)": (main_net, main_net),
        "main network, batch norm folded (inference.json)": (main_net, folded),
        "main network, TorchScript (`run export`)": (main_net, scripted),
        "2D UNet baseline (samssl.networks.UNet2D)": (unet, unet),
    }
    with torch.inference_mode():
        timings = round_robin_ms({name: (lambda f=fn: f(x)) for name, (_, fn) in rows.items()},
                                 args.warmup, args.repeats)
        teacher = ViTDualTaskNet(build_foundation_model("litemedsam"), freeze_encoder=False).eval()
        rows["teacher network (TinyViT encoder + decoder + dual head)"] = (teacher, teacher)
        timings |= round_robin_ms({"teacher network (TinyViT encoder + decoder + dual head)": lambda: teacher(x)},
                                  1, max(3, args.repeats // 10))

    print(f"batch 1, {args.size}x{args.size}, {torch.get_num_threads()} CPU threads, median of {args.repeats} calls "
          "(teacher: fewer)")
    print("| network | parameters (M) | latency (ms) | IQR (ms) |")
    print("|---|---:|---:|---:|")
    for name, (module, _) in rows.items():
        median, iqr = timings[name]
        print(f"| {name} | {_params(module):.2f} | {median:.1f} | {iqr:.1f} |")
    print(f"paper (Table 3): 2.9M parameters, 0.02 s per image; target here: <= 3.0M and <= {TARGET_MS:.0f} ms")

    batch = torch.rand(args.train_batch, 3, args.size, args.size)
    steps = {}
    for channels_last in (False, True):
        network = MobileNetDualTaskUNet(channels_last=channels_last).train()
        steps["NHWC (default)" if channels_last else "NCHW"] = _training_step(network, batch)
    step_times = round_robin_ms(steps, 1, args.train_repeats, block=2)
    print(f"\ntraining step (forward_dual + backward + AdamW), batch {args.train_batch} at {args.size}x{args.size}, "
          f"median of {args.train_repeats}")
    print("| layout | step (ms) | IQR (ms) |")
    print("|---|---:|---:|")
    for name, (median, iqr) in step_times.items():
        print(f"| {name} | {median:.0f} | {iqr:.0f} |")
    print(f"command: OMP_NUM_THREADS={args.threads} python tools/benchmark_samkd_latency.py "
          f"--threads {args.threads} --size {args.size}")


if __name__ == "__main__":
    main()
