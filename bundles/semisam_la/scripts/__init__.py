"""Bundle-local code of the SemiSAM bundle (imported by MONAI as the top-level package ``scripts``).

The method itself lives in ``common`` (it is plug-and-play and shared with the other 3D bundles):
``common.engines.SAMAssistedConsistency`` (the SAM branch), ``common.engines.build_consistency_trainer``
(SupOnly / MT / UA-MT), ``common.data.transforms_3d`` (patches that remember where they came from).
"""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])


def nifti_datalist(path: str) -> list[dict[str, str]]:
    """``[{"image": file}]`` for one NIfTI file or every ``*.nii``/``*.nii.gz`` in a folder (sorted).

    Fails loudly for a missing path or a folder without volumes, rather than writing nothing.
    """
    target = Path(str(path)).expanduser()
    if not str(path).strip() or not target.exists():
        raise FileNotFoundError(f"inference input {str(path)!r} does not exist: pass --input <volume.nii.gz or folder>")
    if target.is_file():
        return [{"image": str(target.resolve())}]
    files = sorted(p for p in target.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise FileNotFoundError(f"no .nii/.nii.gz volume in {target}")
    return [{"image": str(p.resolve())} for p in files]
