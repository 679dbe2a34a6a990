r"""Write an MSD-style ``dataset.json`` for 3D volumes kept in any folder layout, so every 3D bundle reads them.

The 3D bundles read an MSD ``dataset.json`` (``--dataset_dir <folder>``). Challenge releases often
keep one folder per patient instead (CARE-LiSeg: a patient folder per scan, few of them with a
mask). This lists every image matching a glob, pairs it with a label file named relative to the
image, and lists images without one as unannotated (they join the unlabelled pool).

Examples:

    # one folder per patient, GED4 scan and (sometimes) its mask beside it
    python tools/describe_volume_folder.py <root> --images "**/GED4.nii.gz" --label "GED4_mask.nii.gz"
    # MSD-like imagesTr/labelsTr with the same file names
    python tools/describe_volume_folder.py <root> --images "imagesTr/*.nii.gz" --label "../labelsTr/{stem}.nii.gz"

Then: ``python -m monai.bundle run training --config_file bundles/ssl_medsam2/configs/train.json --dataset_dir <root>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samssl.data import describe_volume_folder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder holding the volumes; dataset.json is written here")
    parser.add_argument("--images", required=True, help="glob of the images relative to root ('**' allowed)")
    parser.add_argument("--label", required=True,
                        help="label file relative to each image's folder; {stem} = the image name without extension")
    parser.add_argument("--name", default=None, help="dataset name (default: the folder's name)")
    args = parser.parse_args()
    path = describe_volume_folder(args.root, args.images, args.label, name=args.name)
    cases = json.loads(path.read_text())["training"]
    annotated = sum("label" in c for c in cases)
    print(f"{path}: {len(cases)} volumes, {annotated} with a label, {len(cases) - annotated} unannotated")


if __name__ == "__main__":
    main()
