r"""The teacher's own pseudo-labels on the unlabelled pool, zero-shot vs fine-tuned on the labelled cases.

The split is the bundles' (``samssl.data.split_labelled`` on the first ``--pool`` cases by id,
``--num_labelled`` labelled drawn by ``--seed``). The teacher is fine-tuned on the labelled cases
with ``samssl.stages.teacher_tuning`` (the bundles' CPU-preset settings unless overridden; the
stage is cached in ``--work``), then both teachers segment the first ``--cases`` unlabelled cases
with the same prompts, scored against their labels (read here only to score and to make the
ground-truth prompts; the tuning never sees them):

* ``gt box``: the box of each frame's ground truth (the teacher's ceiling);
* ``jittered box``: that box with each side moved by up to 20 % of its extent (a fixed draw);
* ``student box`` (with ``--student``, LA only): SemiSAM's prompt, the box of the largest component
  of a trained V-Net's (a SemiSAM-bundle ``model.pt``) predicted foreground on the slice, margin 2,
  on the slices where the student predicts foreground.

LA (3D) cases are scored per volume (the slices stacked), dermoscopy per image. Example (the
tables in bundles/semisam_la/docs/README.md and the root README):

    OMP_NUM_THREADS=1 python tools/teacher_tuning_effect.py --data ../shared/data/la --num_labelled 4 \
        --cases 10 --work runs/teacher_effect/la_seed0 --student runs/suponly/model.pt
    OMP_NUM_THREADS=1 python tools/teacher_tuning_effect.py --data ../shared/data/dermoscopy/ph2 \
        --num_labelled 8 --pool 200 --cases 40 --work runs/teacher_effect/ph2_seed0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samssl.data import msd_datalist, ph2_datalist, split_labelled, volume_transforms
from samssl.data.transforms_2d import dermoscopy_transforms
from samssl.foundation import build_foundation_model
from samssl.foundation.prompts import box_prompts
from samssl.foundation.tuned import read_tuned_teacher
from samssl.metrics import binary_dice
from samssl.stages.teacher_tuning import case_frames, tuned_teacher_file


def _student_probability(student: torch.nn.Module, volume: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    from monai.inferers import SlidingWindowInferer

    with torch.no_grad():
        logits = SlidingWindowInferer(patch, sw_batch_size=1, overlap=0.25)(volume[None], student)
    return torch.softmax(logits.float(), 1)[0, 1]


def _load_student(model_file: Path, bundle_name: str) -> torch.nn.Module:
    """A trained bundle's deployed network, built as its ``evaluate.json`` builds it (settings checked)."""
    from monai.bundle import ConfigParser

    from samssl.utils.bundles import config_with_base, import_bundle_scripts

    bundle = Path(__file__).resolve().parents[1] / "bundles" / bundle_name
    import_bundle_scripts(bundle)
    parser = ConfigParser()
    parser.read_config([str(p) for p in config_with_base(bundle / "configs" / "evaluate.json")])
    parser["checkpoint"] = str(model_file)
    parser["device"] = "$torch.device('cpu')"
    return parser.get_parsed_content("network").eval()


def _segment(teacher, frames: list[torch.Tensor], prompts: dict[str, list[torch.Tensor | None]]) -> dict[str, torch.Tensor]:
    """Each prompt kind's mask of every frame (a frame is encoded once, and only if some kind prompts it)."""
    masks: dict[str, list[torch.Tensor]] = {kind: [] for kind in prompts}
    with torch.no_grad():
        for s, frame in enumerate(frames):
            boxes = {kind: prompts[kind][s] for kind in prompts}
            embeddings = teacher.encode(frame[None]) if any(b is not None for b in boxes.values()) else None
            for kind, box in boxes.items():
                empty = torch.zeros(frame.shape[-2:], dtype=torch.bool)
                masks[kind].append(empty if box is None else
                                   teacher.decode(embeddings, boxes=box[None, None]).mask_logits[0, 0] > 0)
    return {kind: torch.stack(m, -1) for kind, m in masks.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="MSD-style LA folder or a PH2 folder")
    parser.add_argument("--pool", type=int, default=60, help="the first N cases by id form the pool (LA: 60)")
    parser.add_argument("--num_labelled", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=10, help="unlabelled pool cases to score, in id order")
    parser.add_argument("--spacing", type=float, default=1.25, help="LA: mm (the CPU presets')")
    parser.add_argument("--image_size", type=int, default=256, help="dermoscopy: pixels (the 2D bundles')")
    parser.add_argument("--work", type=Path, default=Path("runs/teacher_effect"),
                        help="the tuning stage's folder (reused when done)")
    parser.add_argument("--settings", type=json.loads, default={"lora_rank": 0},
                        help="teacher tuning settings (JSON), default the CPU presets': decoder only")
    parser.add_argument("--student", type=Path, default=None,
                        help="LA: a trained 3D bundle's model.pt whose predictions prompt the teachers")
    parser.add_argument("--student_bundle", default="semisam_la", help="the bundle that trained --student")
    parser.add_argument("--tuned", type=Path, default=None,
                        help="a tuned-teacher file to score instead of tuning one here (its split must be this one)")
    parser.add_argument("--student_patch", type=int, nargs=3, default=(64, 64, 48), help="its sliding window")
    parser.add_argument("--runtime", default="fp32", help="both teachers' encoder runtime")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-case scores here")
    args = parser.parse_args(argv)

    volumes = (args.data / "dataset.json").is_file()
    cases = sorted(msd_datalist(args.data) if volumes else ph2_datalist(args.data), key=lambda e: e["id"])
    pool = cases[: args.pool]
    split = split_labelled(pool, num_labelled=args.num_labelled, seed=args.seed)
    labelled = split["labelled"]
    labelled_ids = {e["id"] for e in labelled}
    scored = [e for e in pool if e["id"] not in labelled_ids][: args.cases]  # labels read to score only
    if volumes:
        transform = volume_transforms("eval", target_spacing=args.spacing)
        description: Any = {"target_spacing": args.spacing, "normalize": True}
    else:
        transform = dermoscopy_transforms("eval", args.image_size)
        description = {"image_size": args.image_size}
    started = time.monotonic()
    def base() -> torch.nn.Module:
        return build_foundation_model("litemedsam", cache={}, encoder_runtime=args.runtime)

    if args.tuned is not None:
        tuned_path = str(args.tuned)
        payload = read_tuned_teacher(args.tuned)
        settings = payload.get("settings", {})  # what the file was tuned with is what the record reports
        tuning = f"tuned earlier ({args.tuned.name}, {settings})"
        tuned_cases = {Path(c["image"]).resolve() for c in payload["labelled_cases"]}
        if tuned_cases != {Path(e["image"]).resolve() for e in labelled}:
            raise SystemExit(f"{args.tuned} was tuned on other cases than this split's labelled ones (seed {args.seed})")
    else:
        settings = args.settings
        tuned_path = tuned_teacher_file(base, labelled, transform, description, args.work, settings,
                                        seed=args.seed)
        tuning = f"tuning {(time.monotonic() - started) / 60:.1f} min ({settings})"
    teachers = {"zero-shot": build_foundation_model("litemedsam", encoder_runtime=args.runtime, cache={}),
                "fine-tuned": build_foundation_model("litemedsam", tuned=tuned_path, encoder_runtime=args.runtime,
                                                     cache={})}
    student = None
    if args.student is not None:
        if not volumes:
            raise SystemExit("--student is for LA volumes")
        student = _load_student(args.student, args.student_bundle)
    jitter_generator = torch.Generator().manual_seed(1234)
    rows: list[dict[str, Any]] = []
    for entry in scored:
        frames, truths = case_frames(entry, transform)  # labels read to score only
        prompts: dict[str, list[torch.Tensor | None]] = {"gt box": [], "jittered box": []}
        for truth in truths:
            if truth.any():
                box, _ = box_prompts(truth[None, None].float(), largest_component=False)
                jittered, _ = box_prompts(truth[None, None].float(), largest_component=False, jitter=0.2,
                                          generator=jitter_generator)
                prompts["gt box"].append(box[0])
                prompts["jittered box"].append(jittered[0])
            else:
                prompts["gt box"].append(None)
                prompts["jittered box"].append(None)
        row: dict[str, Any] = {"case": entry["id"]}
        if student is not None:
            volume = torch.stack(frames, -1)
            probability = _student_probability(student, volume, tuple(args.student_patch))
            row["student"] = binary_dice(probability > 0.5, torch.stack(truths, -1))
            prompts["student box"] = []
            for s in range(probability.shape[-1]):
                box, valid = box_prompts(probability[..., s][None, None], threshold=0.5, margin=2)
                prompts["student box"].append(box[0] if bool(valid[0]) else None)
        truth = torch.stack(truths, -1)
        for name, teacher in teachers.items():
            for prompt, masks in _segment(teacher, frames, prompts).items():
                row[f"{name} | {prompt}"] = binary_dice(masks, truth)
        rows.append(row)
        print(json.dumps({k: (round(v * 100, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    columns = [k for k in rows[0] if k != "case"]
    print(f"\n{len(rows)} unlabelled {'volumes' if volumes else 'images'} of {args.data}, {len(labelled)} labelled "
          f"(seed {args.seed}); {tuning}; Dice x 100, mean (sd):")
    for column in columns:
        values = np.array([r[column] for r in rows]) * 100
        print(f"  {column:32s} {values.mean():6.2f} ({values.std():5.2f})")
    print("command: python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "seed": args.seed, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
