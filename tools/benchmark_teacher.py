"""Throughput of a teacher on this machine: encode, cached decode, encode + decode, peak memory.

Why: the image encoder dominates the cost of every SAM-assisted method, and the embedding
cache only pays off if decoding from cached embeddings is much cheaper than encoding. This
prints, for each batch size, images/s for ``encode``, masks/s for ``decode`` from cached
embeddings, masks/s for ``encode`` + ``decode``, the ratio of the last two per mask, and the
peak resident memory of each phase.

Example::

    python tools/benchmark_teacher.py --teacher litemedsam --batch-sizes 1 8 --threads 2

Images are real PH2 dermoscopy images when ``--data-dir`` (or ``../shared/data``) has them,
random otherwise; a box prompt per image is used (LiteMedSAM follows boxes only).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from samssl.foundation import build_foundation_model

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Peak resident memory of this process during a ``with`` block, in MiB.

    A background thread samples the RSS every few milliseconds (psutil), so each benchmark phase
    gets its own peak instead of the process's lifetime maximum.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_mib = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load_images(data_dir: Path | None, count: int, size: int) -> torch.Tensor:
    """``count`` RGB images (size x size): PH2 when available, else seeded random."""
    if data_dir is not None:
        paths = sorted((data_dir / "dermoscopy" / "ph2" / "images").glob("*.jpg"))[:count]
        if len(paths) == count:
            from PIL import Image

            arrays = [np.array(Image.open(p).convert("RGB").resize((size, size))) for p in paths]
            return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds per call over ``repeats`` (after one warm-up) and the phase's peak MiB."""
    fn()
    seconds = []
    with PeakMemory() as memory:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), memory.peak_mib


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="litemedsam")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image-size", type=int, default=256, help="side of the (square) test images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    teacher = build_foundation_model(args.teacher, checkpoint=args.checkpoint)
    images = load_images(args.data_dir if args.data_dir.exists() else None, max(args.batch_sizes), args.image_size)
    s = args.image_size
    box = torch.tensor([s * 0.2, s * 0.25, s * 0.8, s * 0.75])

    print(f"teacher={args.teacher} threads={args.threads} image={s}x{s} repeats={args.repeats} "
          f"torch={torch.__version__} device={teacher.device}")
    header = (f"{'batch':>5} | {'encode img/s':>12} | {'cached decode masks/s':>21} | {'encode+decode masks/s':>21} | "
              f"{'decode cost / full':>18} | {'peak MiB enc/dec/full':>21}")
    print(header)
    print("-" * len(header))
    with torch.inference_mode():
        for batch in args.batch_sizes:
            x = images[:batch]
            boxes = box.expand(batch, 1, 4)
            embeddings = teacher.encode(x)
            t_encode, m_encode = timed(lambda: teacher.encode(x), args.repeats)
            t_decode, m_decode = timed(lambda: teacher.decode(embeddings, boxes=boxes), args.repeats)
            t_full, m_full = timed(lambda: teacher.decode(teacher.encode(x), boxes=boxes), args.repeats)
            print(f"{batch:>5} | {batch / t_encode:>12.2f} | {batch / t_decode:>21.1f} | {batch / t_full:>21.2f} | "
                  f"{t_decode / t_full:>17.1%} | {m_encode:>6.0f}/{m_decode:>6.0f}/{m_full:>6.0f}")
    print("decode cost / full = time per mask of cached decode divided by encode+decode "
          "(target: at most 10%, i.e. cached decode at least 10x cheaper)")


if __name__ == "__main__":
    main()
