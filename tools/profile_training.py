r"""Seconds per training iteration of every bundle's method, with where the time goes, on real data.

Each bundle's own ``train.json`` + ``cpu.json`` (the preset the results tables use) is parsed with
MONAI's ``ConfigParser`` and its trainer run for ``--warmup`` + ``--iterations`` iterations on a
small real subset (PH2 for the 2D bundles, LA for the 3D ones), one bundle after the other in
fresh processes with the same thread count, so the rows are comparable. Reported per row: mean
s/iteration (warm-up excluded), the share spent waiting for the labelled batch (data loading and
augmentation on the critical path), and with ``--profile`` the operators that dominate one
iteration (``torch.profiler``, self CPU time).

A row can be timed under several settings side by side (``--compare``), e.g. the MobileNet
student in NHWC vs NCHW memory format::

    python tools/profile_training.py --threads 2 --iterations 5 --profile
    python tools/profile_training.py --bundles samkd_dualtask_skin --compare "network_def#channels_last=false"

SFR's re-training is timed without its pseudo-label term (``baselines/mean_teacher.json``): the
term needs SAM's fine-tuning and pseudo-labelling first; ``tools/benchmark_sfr.py`` times those
stages and the term itself. SSL-MedSAM2's row is one FSL fold's training (the planned DynUNet on
labelled + pseudo-labelled patches, :func:`samssl.engines.patch_training.train_on_volume_patches`),
which has no trainer in the config to hook: its iterations are timed between successive loss calls.

Mixed precision side by side (issue figures: 3D at least 1.8x)::

    python tools/profile_training.py --threads 2 --compare "amp=bf16"
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bundle -> (extra config files after train.json + cpu.json, data kind, what the row runs)
ROWS: dict[str, tuple[list[str], str, str]] = {
    "uamt_skin": ([], "dermoscopy", "UAMT (dual-head DeepLabv3, 2-stage mean teacher)"),
    "samkd_dualtask_skin": ([], "dermoscopy", "dual-task student + ViT teacher + SAM distillation"),
    "semisam_la": ([], "volumes", "MT V-Net + SAM-assisted consistency"),
    "sfr_la": (["baselines/mean_teacher.json"], "volumes", "MT V-Net re-training (no pseudo-label term)"),
    "ssl_medsam2": ([], "volumes", "one FSL fold: planned DynUNet, Dice + CE"),
}


def _subset(kind: str, data_root: Path, dest: Path, count: int) -> Path:
    """A small folder of real cases in the layout the bundle reads (PH2 folders or an MSD dataset.json)."""
    import samssl.data as data

    if kind == "dermoscopy":
        return data.ph2_subset(data_root / "dermoscopy" / "ph2", dest, count)
    return data.msd_subset(data_root / "la", dest, count, name="LA subset")


def time_fold_training(parser, work: Path, warmup: int, iterations: int) -> dict:
    """SSL-MedSAM2: time one FSL fold's training loop (no trainer in the config) between loss calls."""
    import torch

    from samssl.data import msd_datalist
    from samssl.engines.patch_training import train_on_volume_patches
    from samssl.losses import dice_ce_loss

    training = dict(parser.get_parsed_content("fsl#training"))
    network = parser.get_parsed_content("build_network")()
    optimizer = torch.optim.SGD(network.parameters(), lr=training["learning_rate"], momentum=training["momentum"],
                                nesterov=True)
    dice_ce = dice_ce_loss(lambda_dice=1.0, lambda_ce=1.0)
    calls: list[float] = []

    def timed_loss(*args, **kwargs):
        calls.append(time.perf_counter())
        return dice_ce(*args, **kwargs)

    cases = msd_datalist(parser["dataset_dir"])
    torch.manual_seed(0)
    train_on_volume_patches(network, optimizer, timed_loss, cases, parser.get_parsed_content("patch_size"),
                            parser.get_parsed_content("target_spacing"), warmup + iterations + 1,
                            int(training["batch_size"]), work / "checkpoints", 10_000,
                            amp=parser.get_parsed_content("amp"))
    # the gap between loss calls k and k+1 is one whole iteration (batch, forward, backward, step)
    gaps = [b - a for a, b in itertools.pairwise(calls)][warmup:]
    return {"seconds": sum(gaps) / len(gaps), "data_wait": None, "iterations": len(gaps), "profile": ""}


def time_bundle(bundle: str, overrides: dict[str, object], data_root: Path, warmup: int, iterations: int,
                profile: bool) -> dict:
    """In this process: build ``bundle``'s trainer from its configs and time its iterations."""
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    from samssl.utils.bundles import import_bundle_scripts

    configs, kind, _ = ROWS[bundle]
    bundle_dir = ROOT / "bundles" / bundle
    import_bundle_scripts(bundle_dir)  # the configs' `scripts.x` are this bundle's, as under monai.bundle run
    work = Path(tempfile.mkdtemp(prefix=f"profile_{bundle}_"))
    dataset = _subset(kind, data_root, work / "data", 12 if kind == "dermoscopy" else 6)
    parser = ConfigParser()
    parser.read_config([str(bundle_dir / "configs" / c) for c in ["train.json", "cpu.json", *configs]])
    settings = {"dataset_dir": str(dataset), "num_labelled": 4 if kind == "dermoscopy" else 2, "num_val": 1,
                "output_dir": str(work / "run"), "model_dir": str(work / "run"), "num_workers": 0,
                "max_epochs": 1, "epoch_length": warmup + iterations, **overrides}
    for key, value in settings.items():
        parser[key] = value
    if bundle == "ssl_medsam2":
        return time_fold_training(parser, work, warmup, iterations)
    trainer = parser.get_parsed_content("train#trainer")
    torch.manual_seed(0)

    stamps: dict[str, list[float]] = {"start": [], "end": [], "batch": []}
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stamps["start"].append(time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps["end"].append(time.perf_counter()))
    batch_started: list[float] = []
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: batch_started.append(time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED,
                              lambda e: stamps["batch"].append(time.perf_counter() - batch_started[-1]))
    table = ""
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        profiler = torch_profile(activities=[ProfilerActivity.CPU])

        def start(engine) -> None:
            if engine.state.iteration == warmup + 1:
                profiler.__enter__()

        def stop(engine) -> None:
            nonlocal table
            if engine.state.iteration == warmup + 1:
                profiler.__exit__(None, None, None)
                table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)

        trainer.add_event_handler(Events.ITERATION_STARTED, start)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, stop)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=warmup + iterations), lambda e: e.terminate())
    trainer.run()
    durations = [b - a for a, b in zip(stamps["start"], stamps["end"])][warmup:]
    # the labelled batch of iteration k is fetched before ITERATION_STARTED of k: pair by position
    waits = stamps["batch"][warmup:warmup + len(durations)]
    seconds = sum(durations) / len(durations)
    wait = sum(waits) / max(len(waits), 1)
    return {"seconds": seconds + wait, "data_wait": wait, "iterations": len(durations), "profile": table}


def _parse_compare(text: str) -> dict[str, object]:
    """``"a#b=false c=3"`` -> ``{"a#b": False, "c": 3}`` (JSON values, else strings)."""
    settings: dict[str, object] = {}
    for pair in text.split():
        key, _, value = pair.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with dermoscopy/ph2 and la")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every row")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per row")
    parser.add_argument("--profile", action="store_true", help="print the top operators of one iteration")
    parser.add_argument("--compare", action="append", default=[],
                        help='extra setting for every row, timed beside the default (e.g. "network_def#channels_last=false")')
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one row, JSON to stdout
    args = parser.parse_args()

    if args.row:
        bundle, settings = json.loads(args.row)
        result = time_bundle(bundle, settings, Path(args.data), args.warmup, args.iterations, args.profile)
        print("PROFILE_ROW " + json.dumps(result))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    lines = ["| bundle (CPU preset) | setting | s/iteration | speed-up vs default | waiting for data |",
             "|---|---|---:|---:|---:|"]
    profiles: list[str] = []
    for bundle in args.bundles:
        for setting in ["", *args.compare]:
            settings = _parse_compare(setting)
            command = [sys.executable, __file__, "--row", json.dumps([bundle, settings]), "--data", args.data,
                       "--warmup", str(args.warmup), "--iterations", str(args.iterations)]
            command += ["--profile"] if args.profile and not setting else []
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
            row = next((json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()
                        if line.startswith("PROFILE_ROW ")), None)
            if row is None:
                if setting:  # a setting a bundle does not have: say so and go on
                    lines.append(f"| {bundle} | {setting} | not applicable | | |")
                    continue
                raise SystemExit(f"{bundle} failed:\n{done.stderr[-4000:]}")
            label = setting or f"default: {ROWS[bundle][2]}"
            if not setting:
                default_seconds = row["seconds"]
            speedup = f"{default_seconds / row['seconds']:.2f}x" if setting else ""
            wait = "n/a" if row["data_wait"] is None else f"{100 * row['data_wait'] / row['seconds']:.0f}%"
            lines.append(f"| {bundle} | {label} | {row['seconds']:.2f} | {speedup} | {wait} |")
            print(lines[-1], flush=True)
            if row["profile"]:
                profiles.append(f"\n### {bundle}: one iteration, top operators by self CPU time\n{row['profile']}")
    print("\n" + "\n".join(lines))
    print(f"\n{args.iterations} timed iterations per row after {args.warmup} warm-up, {args.threads} threads, "
          f"train.json + cpu.json, real data subsets.")
    print("".join(profiles))
    print(f"command: python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
