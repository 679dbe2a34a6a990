"""How a mean teacher's BatchNorm mode changes its pseudo-labels: running statistics against batch statistics.

UAMT's (and MT's) EMA teacher can normalise with the EMA-averaged running statistics (eval mode,
``EMATeacher(batch_norm="running")``) or with the statistics of the batch it is given (the reference
mean-teacher codes' train-mode teacher, ``batch_norm="batch"``). This tool loads training checkpoints
of a run (``model`` = the student, ``teacher`` = its EMA) and prints, for the student and the teacher
in both modes, the share of foreground pixels in their arg-max on the run's unlabelled images and
their Dice against those images' masks (a pool cut from a labelled folder has them: the truth is
read from the pool folder, never during training), and the foreground share on the labelled images
against their labels. Batches of ``--batch_size`` images, the bundle's evaluation transform at the
run's input size: the pseudo-labels the trainer would make, without its augmentation.

Keep a run's checkpoints with ``samssl-compare ... --keep_checkpoints`` (they are removed when a run
finishes otherwise)::

    python tools/teacher_batch_norm_effect.py --run runs/cmp/seed0/uamt \\
        --checkpoints "runs/cmp/seed0/uamt/checkpoints/checkpoint_iteration=100.pt" ... --cases 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "uamt_skin"


def _network(run: Path) -> tuple[torch.nn.Module, int]:
    """The run's network, built from the bundle's train.json with the settings its run.json records."""
    from monai.bundle import ConfigParser

    settings = json.loads((run / "run.json").read_text())["settings"]
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json")])
    parser["bundle_root"] = str(BUNDLE)
    for key, value in settings.items():
        if key.startswith("method#") or key in ("student", "output_stride", "image_size"):
            parser[key] = value
    return parser.get_parsed_content("network_def"), int(settings["image_size"])


def _with_truth(entries: list[dict], pool: Path) -> list[dict]:
    from samssl.data import dermoscopy_datalist

    masks = {e["id"]: e["label"] for e in dermoscopy_datalist(pool)}
    missing = [e["id"] for e in entries if e["id"] not in masks]
    if missing:
        raise SystemExit(f"no mask for {len(missing)} unlabelled images in {pool} (e.g. {missing[0]}): the tool needs "
                         "a pool cut from a labelled folder.")
    return [{**e, "label": masks[e["id"]]} for e in entries]


def _scores(network: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float, float]:
    """(foreground share of the arg-max, mean Dice against the masks, foreground share of the masks)."""
    shares, dices, truth = [], [], []
    with torch.no_grad():
        for image, label in batches:
            prediction = network(image).argmax(dim=1) > 0
            target = label[:, 0] > 0
            shares.append(prediction.float().mean().item())
            truth.append(target.float().mean().item())
            overlap = (prediction & target).sum(dim=(1, 2)).float()
            sizes = (prediction.sum(dim=(1, 2)) + target.sum(dim=(1, 2))).float()
            dices += (2 * overlap / sizes.clamp(min=1)).tolist()
    return sum(shares) / len(shares), sum(dices) / len(dices), sum(truth) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a UAMT/MT run folder (datalist.json, run.json)")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="training checkpoints of that run")
    parser.add_argument("--cases", type=int, default=32, help="unlabelled images scored (default 32)")
    parser.add_argument("--batch_size", type=int, default=4, help="images per batch (the CPU preset's 4)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    from samssl.data.transforms_2d import dermoscopy_transforms
    from samssl.utils.bundles import import_bundle_scripts
    from samssl.utils.modules import batch_statistics

    import_bundle_scripts(BUNDLE)  # the bundle's scripts package builds its network

    run = Path(args.run)
    datalist = json.loads((run / "datalist.json").read_text())
    pool = Path(datalist["unlabelled"][0]["image"]).parent.parent
    network, size = _network(run)
    transform = dermoscopy_transforms("eval", image_size=size)

    def batches(entries: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        items = [transform(dict(e)) for e in entries]
        return [(torch.stack([i["image"] for i in items[k:k + args.batch_size]]),
                 torch.stack([i["label"] for i in items[k:k + args.batch_size]]))
                for k in range(0, len(items), args.batch_size)]

    unlabelled = batches(_with_truth(datalist["unlabelled"][: args.cases], pool))
    labelled = batches(datalist["labelled"])
    rows = []
    for checkpoint in args.checkpoints:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        iteration = state.get("trainer", {}).get("iteration")
        for who in ("model", "teacher"):
            network.load_state_dict(state[who])
            network.eval()
            for mode in ("running", "batch"):
                with batch_statistics(network) if mode == "batch" else contextlib.nullcontext():
                    share, dice, truth = _scores(network, unlabelled)
                    labelled_share, _, labelled_truth = _scores(network, labelled)
                rows.append({"checkpoint": Path(checkpoint).name, "iteration": iteration,
                             "network": "student" if who == "model" else "teacher", "batch_norm": mode,
                             "unlabelled_foreground": share, "unlabelled_dice": dice, "unlabelled_truth": truth,
                             "labelled_foreground": labelled_share, "labelled_truth": labelled_truth})
    print("| iteration | network | BatchNorm | unlabelled: foreground (truth) | unlabelled Dice | "
          "labelled: foreground (labels) |")
    print("|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['iteration']} | {r['network']} | {r['batch_norm']} | {100 * r['unlabelled_foreground']:.1f}% "
              f"({100 * r['unlabelled_truth']:.1f}%) | {100 * r['unlabelled_dice']:.1f} | "
              f"{100 * r['labelled_foreground']:.1f}% ({100 * r['labelled_truth']:.1f}%) |")
    command = "python " + shlex.join(["tools/teacher_batch_norm_effect.py", *sys.argv[1:]])
    print(f"\n{len(unlabelled) * args.batch_size} unlabelled images of {pool.name}, {len(datalist['labelled'])} "
          f"labelled, batches of {args.batch_size}, {size} px.\ncommand: {command}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
