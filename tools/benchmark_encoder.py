"""Speed and parity of each encoder runtime of a foundation model, side by side in one process.

Why: a faster encoder is only worth having if its masks are as good as fp32's, and on a shared
machine only ratios measured together mean anything. For every runtime of
:mod:`samssl.foundation.encoder_runtime` this encodes the same real frames (PH2 dermoscopy
images and slices of one LA MRI volume) in batches, interleaving the runtimes batch by batch,
and prints the median seconds per frame, the ratio to fp32 eager, the embedding cosine to
fp32 (worst frame), and the ground-truth-box Dice on each data set with its change against
fp32 in Dice points; a runtime within 0.5 points on both is what ``auto`` may choose.

Examples (speed on a few frames; parity at the scale the speed issue asks for: 30 PH2 images and
every slice holding atrium of 5 LA volumes)::

    python tools/benchmark_encoder.py --ph2 6 --la-slices 10 --threads 2
    python tools/benchmark_encoder.py --ph2 30 --la-volumes 5 --threads 1

Data come from ``--data-dir`` (default ``$SAM_SSL_DATA_DIR``, else ``../shared/data``):
``dermoscopy/ph2/{images,masks}`` and ``la/{dataset.json,imagesTr,labelsTr}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samssl.foundation import ImageEmbeddings, build_foundation_model
from samssl.foundation.encoder_runtime import AUTO_MAX_DICE_DROP, available_runtimes
from samssl.metrics import binary_dice

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _gt_box(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([[cols.min(), rows.min(), cols.max(), rows.max()]], dtype=torch.float32)


def load_ph2(data_dir: Path, count: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``count`` PH2 images ``(1, 3, H, W)`` 0-255 with their lesion masks."""
    from PIL import Image

    root = data_dir / "dermoscopy" / "ph2"
    frames = []
    for path in sorted((root / "images").glob("*.jpg"))[:count]:
        image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float()
        mask = torch.from_numpy(np.asarray(Image.open(root / "masks" / f"{path.stem}_lesion.png").convert("L")) > 127)
        frames.append(("ph2", image, mask))
    return frames


def load_la(data_dir: Path, count: int, volumes: int = 0) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Axial slices ``(1, 1, X, Y)`` with their atrium masks: ``count`` of the first LA volume, evenly
    over the atrium's extent, or with ``volumes`` > 0 every slice holding atrium (over 50 pixels)
    of the first ``volumes`` volumes."""
    import nibabel as nib

    root = data_dir / "la"
    entries = json.loads((root / "dataset.json").read_text())["training"][: max(volumes, 1)]
    frames = []
    for entry in entries:
        volume = np.asarray(nib.load(root / entry["image"]).dataobj, dtype=np.float32)
        label = np.asarray(nib.load(root / entry["label"]).dataobj) > 0.5
        with_label = np.flatnonzero(label.sum(axis=(0, 1)) > 50)
        picks = with_label if volumes else with_label[np.linspace(0, len(with_label) - 1, count).round().astype(int)]
        frames += [("la", torch.from_numpy(volume[..., z].copy())[None, None], torch.from_numpy(label[..., z].copy()))
                   for z in picks]
    return frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="litemedsam")
    parser.add_argument("--runtimes", nargs="+", default=None, help="default: every runtime available here")
    parser.add_argument("--ph2", type=int, default=6, help="PH2 images (parity and timing)")
    parser.add_argument("--la-slices", type=int, default=10, help="slices of one LA volume (parity and timing)")
    parser.add_argument("--la-volumes", type=int, default=0,
                        help="instead: every slice holding atrium of the first N LA volumes")
    parser.add_argument("--batch", type=int, default=2, help="frames per encode call")
    parser.add_argument("--threads", type=int, default=2)
    default_data = os.environ.get("SAM_SSL_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data"
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    args = parser.parse_args(argv)
    print("$ python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))

    torch.set_num_threads(args.threads)
    names = args.runtimes or list(available_runtimes())
    if "fp32" not in names:
        names.insert(0, "fp32")
    models = {name: build_foundation_model(args.teacher, encoder_runtime=name) for name in names}
    frames = load_ph2(args.data_dir, args.ph2) + load_la(args.data_dir, args.la_slices, args.la_volumes)
    la_frames = sum(source == "la" for source, _, _ in frames)

    # Same-size frames share a batch (an encode call needs one size); runtimes alternate per batch.
    batches: list[list[int]] = []
    for i, (source, image, _) in enumerate(frames):
        last = batches[-1] if batches else None
        if last and len(last) < args.batch and frames[last[0]][1].shape == image.shape:
            last.append(i)
        else:
            batches.append([i])
    features: dict[str, list[torch.Tensor]] = {name: [None] * len(frames) for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for name, model in models.items():  # warm-up: exports and compiles happen here, untimed
            model.encode(frames[0][1])
        for batch in batches:
            images = torch.cat([frames[i][1] for i in batch])
            for name, model in models.items():
                start = time.perf_counter()
                out = model.encode(images).features
                seconds[name].append((time.perf_counter() - start) / len(batch))
                for j, i in enumerate(batch):
                    features[name][i] = out[j:j + 1]

        ref_model = models["fp32"]
        rows = []
        for name in names:
            cosines, dice = [], {"ph2": [], "la": []}
            for i, (source, image, mask) in enumerate(frames):
                feats = features[name][i]
                cosines.append(float(F.cosine_similarity(feats.flatten(1), features["fp32"][i].flatten(1))))
                _, original_size, input_size = ref_model.transform.images_to_input(image)
                embeddings = ImageEmbeddings(features=feats, original_sizes=(original_size,), input_sizes=(input_size,))
                logits = ref_model.decode(embeddings, boxes=_gt_box(mask)).mask_logits[0, 0]
                dice[source].append(binary_dice(logits > 0, mask))
            rows.append((name, statistics.median(seconds[name]), min(cosines),
                         float(np.mean(dice["ph2"])), float(np.mean(dice["la"]))))

    _, base_s, _, base_ph2, base_la = rows[0]
    la_what = f"{la_frames} LA slices" + (f" (every atrium slice of {args.la_volumes} volumes)" if args.la_volumes else "")
    print(f"teacher={args.teacher} threads={args.threads} frames: {args.ph2} PH2 + {la_what}, "
          f"batch {args.batch}, {len(batches)} timed batches per runtime (median), torch={torch.__version__}")
    header = (f"{'runtime':<14} | {'s/frame':>7} | {'x fp32':>6} | {'min cos':>8} | {'PH2 Dice':>8} | "
              f"{'d pts':>6} | {'LA Dice':>7} | {'d pts':>6} | auto-eligible")
    print(header)
    print("-" * len(header))
    for name, sec, cos, ph2, la in rows:
        d_ph2, d_la = 100 * (ph2 - base_ph2), 100 * (la - base_la)
        eligible = max(-d_ph2, -d_la) <= 100 * AUTO_MAX_DICE_DROP
        print(f"{name:<14} | {sec:>7.3f} | {base_s / sec:>5.2f}x | {cos:>8.5f} | {ph2:>8.4f} | {d_ph2:>+6.2f} | "
              f"{la:>7.4f} | {d_la:>+6.2f} | {'yes' if eligible else 'no'}")


if __name__ == "__main__":
    main()
