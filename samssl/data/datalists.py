"""Datalists for the community layouts of the data sets used here, and any user folder of the same shape.

A datalist is what MONAI datasets consume: a list of dicts. Every entry here has

* ``"image"``: absolute path (str) of the image file,
* ``"label"``: absolute path (str) of the mask, only when the case has one,
* ``"id"``: the case id (str), unique within the list.

Lists are sorted by id so that the same folder always yields the same list, whatever order the
file system returns, which is what makes seeded splits reproducible across machines.

Supported layouts:

* ISIC challenges (2016-2018 Task 1): ``*_Input/ISIC_x.jpg`` + ``*_GroundTruth/ISIC_x_segmentation.png``.
* PH2: flat ``images/IMDxxx.jpg`` + ``masks/IMDxxx_lesion.png``, or the original nested
  ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` layout.
* A plain folder of images (an unlabelled pool).
* UA-MT HDF5: ``[2018LA_Seg_Training Set/]<id>/mri_norm2.h5`` + a list file (``train.list``).
* Medical Segmentation Decathlon: ``dataset.json`` + ``imagesTr``/``labelsTr``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from samssl.utils.errors import InvalidInputError, MissingInputError

__all__ = [
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
    "isic_datalist",
    "ph2_datalist",
    "image_folder_datalist",
    "dermoscopy_datalist",
    "uamt_h5_datalist",
    "msd_datalist",
    "write_msd_description",
    "describe_volume_folder",
    "volume_datalist",
    "nifti_datalist",
    "UnknownLayoutError",
]

PathLike = str | Path

#: File suffixes accepted as 2D images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: File suffixes of 3D volumes read with MONAI's image readers (lower case; ``.nii.gz`` before ``.nii``).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_ISIC_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_ISIC_MASK_SUFFIX = "_segmentation.png"
_PH2_NESTED_DIR = "PH2 Dataset images"
_UAMT_H5_NAME = "mri_norm2.h5"
_UAMT_CASE_DIRS = ("", "2018LA_Seg_Training Set")
_MSD_JSON = "dataset.json"


class UnknownLayoutError(InvalidInputError):
    """A folder matches none of the layouts an auto-detecting builder knows."""


def _absolute(path: PathLike) -> Path:
    """Absolute, normalised path; symlinks are kept (ids come from the names the user sees)."""
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def _existing_dir(root: PathLike, what: str) -> Path:
    path = _absolute(root)
    if not path.exists():
        raise MissingInputError(f"{what} folder not found: {path}")
    if not path.is_dir():
        raise InvalidInputError(f"{what} path is not a folder: {path}")
    return path


def _nonempty(datalist: list[dict[str, str]], root: Path, expected: str) -> list[dict[str, str]]:
    if not datalist:
        raise InvalidInputError(f"no image/label pairs found in {root}: expected {expected}")
    return sorted(datalist, key=lambda entry: entry["id"])


def _image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _entry(image: Path, label: Path | None, case_id: str) -> dict[str, str]:
    entry = {"image": str(image), "label": str(label)} if label is not None else {"image": str(image)}
    entry["id"] = case_id
    return entry


def _pair_or_raise(
    images: dict[str, Path], masks: dict[str, Path], allow_unlabelled: bool, where: Path
) -> list[dict[str, str]]:
    """Join images and masks on the case id; an image without a mask is an error unless allowed.

    Masks without an image are ignored: ground-truth folders are often shipped with more files
    than the image folder a user kept.
    """
    missing = sorted(set(images) - set(masks))
    if missing and not allow_unlabelled:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InvalidInputError(
            f"{len(missing)} image(s) in {where} have no mask: {shown}; "
            "pass allow_unlabelled=True to keep them as unlabelled cases"
        )
    return [_entry(path, masks.get(case_id), case_id) for case_id, path in images.items()]


# ----------------------------------------------------------------------------------------- ISIC
_ISIC_INPUT_ENDINGS = ("_Input", "_Data")  # 2018 names inputs "*_Input", 2016/2017 "*_Data"
_ISIC_TRUTH_ENDING = "_GroundTruth"


def _isic_role(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    if folder.name.endswith(_ISIC_TRUTH_ENDING):
        return "truth"
    return "input" if folder.name.endswith(_ISIC_INPUT_ENDINGS) else None


def _isic_folder_key(folder_name: str) -> str:
    """``ISIC2018_Task1-2_Training_Input`` -> ``isic2018_training``: drop task/part tokens and the role.

    ISIC names inputs and ground truth of one subset differently (``Task1-2`` vs ``Task1``,
    ``ISIC-2017_Training_Data`` vs ``ISIC-2017_Training_Part1_GroundTruth``), so folders are
    paired on what is left: the year and the subset (training/validation/test).
    """
    tokens = folder_name.split("_")[:-1]
    return "_".join(t.lower() for t in tokens if t and not re.fullmatch(r"(?i)(task|part)[\d\-]*", t))


def _isic_folder_pairs(root: Path) -> list[tuple[Path, Path | None]]:
    inputs = sorted(p for p in root.iterdir() if _isic_role(p) == "input")
    truths = sorted(p for p in root.iterdir() if _isic_role(p) == "truth")
    if len(inputs) == 1 and len(truths) <= 1:
        return [(inputs[0], truths[0] if truths else None)]
    truth_by_key = {_isic_folder_key(t.name): t for t in truths}
    return [(i, truth_by_key.get(_isic_folder_key(i.name))) for i in inputs]


def _isic_masks(truth_dir: Path | None) -> dict[str, Path]:
    """Masks by case id; ISIC 2016 spells the suffix ``_Segmentation.png``."""
    if truth_dir is None:
        return {}
    return {
        p.name[: -len(_ISIC_MASK_SUFFIX)]: p
        for p in truth_dir.iterdir()
        if p.is_file() and p.name.lower().endswith(_ISIC_MASK_SUFFIX)
    }


def isic_datalist(root: PathLike, allow_unlabelled: bool = False, subset: str | None = None) -> list[dict[str, str]]:
    """Pairs ``*_Input/ISIC_x.{jpg,jpeg,png}`` with ``*_GroundTruth/ISIC_x_segmentation.png``.

    Any challenge naming works (``ISIC2017_Task1_Input``, ``ISIC2018_Task1-2_Training_Input``,
    ``ISIC-2017_Training_Data``, ...). ISIC's ``*_superpixels.png`` files are skipped.

    Args:
        root: folder that holds the input (``*_Input`` / ``*_Data``) and ``*_GroundTruth`` folders.
        allow_unlabelled: keep images that have no mask (entries without ``"label"``);
            otherwise they are an error, since a silently shorter list skews every result.
        subset: when ``root`` holds several input folders (training, validation, test), the
            one(s) whose name contains this text (case-insensitive), e.g. ``"Training"``.
            Mixing them silently would leak test cases into training, so it is required then.
    """
    root = _existing_dir(root, "ISIC dataset")
    pairs = _isic_folder_pairs(root)
    if subset is not None:
        pairs = [(i, t) for i, t in pairs if subset.lower() in i.name.lower()]
    elif len(pairs) > 1:
        names = ", ".join(i.name for i, _ in pairs)
        raise InvalidInputError(f"{root} holds several ISIC input folders ({names}); pass subset= (e.g. 'Training')")

    datalist: list[dict[str, str]] = []
    for input_dir, truth_dir in pairs:
        images = {
            p.stem: p for p in _image_files(input_dir, _ISIC_IMAGE_SUFFIXES) if not p.stem.endswith("_superpixels")
        }
        datalist += _pair_or_raise(images, _isic_masks(truth_dir), allow_unlabelled, input_dir)
    return _nonempty(datalist, root, "*_Input/ISIC_x.jpg (or *_Data/) with *_GroundTruth/ISIC_x_segmentation.png")


# ------------------------------------------------------------------------------------------ PH2
def _ph2_nested_root(root: Path) -> Path | None:
    for candidate in (root / _PH2_NESTED_DIR, root / "PH2Dataset" / _PH2_NESTED_DIR):
        if candidate.is_dir():
            return candidate
    return None


def _ph2_nested(nested: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for case_dir in sorted(p for p in nested.iterdir() if p.is_dir()):
        case_id = case_dir.name
        for path in (case_dir / f"{case_id}_Dermoscopic_Image").glob(f"{case_id}.*"):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images[case_id] = path
        for path in (case_dir / f"{case_id}_lesion").glob(f"{case_id}_lesion.*"):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                masks[case_id] = path
    return images, masks


def ph2_datalist(root: PathLike, allow_unlabelled: bool = False) -> list[dict[str, str]]:
    """PH2 pairs: flat ``images/IMDxxx.jpg`` + ``masks/IMDxxx_lesion.png``, or the original layout.

    The original download nests each case as
    ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` with
    ``IMDxxx_lesion/IMDxxx_lesion.bmp``; ``root`` may be that folder's parent or ``PH2Dataset``'s.
    """
    root = _existing_dir(root, "PH2 dataset")
    if (root / "images").is_dir():
        images = {p.stem: p for p in _image_files(root / "images")}
        masks_dir = root / "masks"
        masks = (
            {p.stem[: -len("_lesion")]: p for p in _image_files(masks_dir) if p.stem.endswith("_lesion")}
            if masks_dir.is_dir()
            else {}
        )
        where = root / "images"
    elif (nested := _ph2_nested_root(root)) is not None:
        images, masks = _ph2_nested(nested)
        where = nested
    else:
        images, masks, where = {}, {}, root
    datalist = _pair_or_raise(images, masks, allow_unlabelled, where)
    return _nonempty(
        datalist,
        root,
        "images/IMDxxx.jpg with masks/IMDxxx_lesion.png, "
        f"or '{_PH2_NESTED_DIR}/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp'",
    )


# ------------------------------------------------------------------------------ plain image pool
def image_folder_datalist(root: PathLike, recursive: bool = False) -> list[dict[str, str]]:
    """A plain folder of images as an unlabelled pool: entries have no ``"label"``.

    With ``recursive=True`` sub-folders are searched too and the id is the path relative to
    ``root`` without suffix (``"batch1/img_003"``), so that ids stay unique.
    """
    root = _existing_dir(root, "image")
    paths = sorted(root.rglob("*") if recursive else root.iterdir())
    datalist = [
        _entry(p, None, p.relative_to(root).with_suffix("").as_posix())
        for p in paths
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not datalist:
        raise InvalidInputError(f"no images found in {root}: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return sorted(datalist, key=lambda entry: entry["id"])


# ---------------------------------------------------------------------------- dermoscopy (auto)
def _looks_like_isic(root: Path) -> bool:
    return any(_isic_role(p) == "input" for p in root.iterdir())


def _looks_like_ph2(root: Path) -> bool:
    return (root / "images").is_dir() or _ph2_nested_root(root) is not None


def dermoscopy_datalist(root: PathLike, allow_unlabelled: bool = False) -> list[dict[str, str]]:
    """ISIC or PH2 layout, whichever ``root`` has (ISIC first)."""
    root = _existing_dir(root, "dermoscopy dataset")
    if _looks_like_isic(root):
        return isic_datalist(root, allow_unlabelled=allow_unlabelled)
    if _looks_like_ph2(root):
        return ph2_datalist(root, allow_unlabelled=allow_unlabelled)
    raise UnknownLayoutError(
        f"{root} is neither an ISIC nor a PH2 dataset folder: looked for '*_Input' or '*_Data' + '*_GroundTruth' "
        f"folders (ISIC), 'images/' + 'masks/' folders or '{_PH2_NESTED_DIR}/' (PH2)"
    )


# ------------------------------------------------------------------------------------- UA-MT h5
def _read_list_file(list_path: Path) -> list[str]:
    """Case ids from a UA-MT list file; lines may be bare ids or paths ending in ``<id>/<name>.h5``."""
    ids = []
    for line in list_path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = Path(line.replace("\\", "/")).parts
        ids.append(parts[-2] if line.endswith(".h5") and len(parts) > 1 else parts[-1])
    return ids


def _find_case_h5(root: Path, case_id: str, h5_name: str) -> Path | None:
    for sub in _UAMT_CASE_DIRS:
        candidate = root / sub / case_id / h5_name
        if candidate.is_file():
            return candidate
    return None


def uamt_h5_datalist(
    root: PathLike, list_file: str | None = "train.list", h5_name: str = _UAMT_H5_NAME
) -> list[dict[str, str]]:
    """UA-MT HDF5 cases: ``<root>/[2018LA_Seg_Training Set/]<id>/mri_norm2.h5``.

    Image and label live in the same file (datasets ``image`` and ``label``), so both keys point
    to it; read them with :class:`samssl.data.readers.H5VolumeReader`.

    Args:
        root: the data folder of UA-MT / SSL4MIS style code.
        list_file: the list of cases (relative to ``root`` or absolute), as those repositories
            ship it; ``None`` takes every case folder that holds ``h5_name``.
        h5_name: the file name inside each case folder.
    """
    root = _existing_dir(root, "UA-MT h5 dataset")
    if list_file is None:
        found = {p.parent.name: p for sub in _UAMT_CASE_DIRS for p in (root / sub).glob(f"*/{h5_name}")}
    else:
        list_path = Path(list_file) if Path(list_file).is_absolute() else root / list_file
        if not list_path.is_file():
            raise MissingInputError(f"case list not found: {list_path} (pass list_file=None to take every case folder)")
        found = {}
        for case_id in _read_list_file(list_path):
            path = _find_case_h5(root, case_id, h5_name)
            if path is None:
                searched = " or ".join(str(root / sub / case_id / h5_name) for sub in _UAMT_CASE_DIRS)
                raise MissingInputError(f"case '{case_id}' listed in {list_path} not found: looked for {searched}")
            found[case_id] = path
    datalist = [{"image": str(p), "label": str(p), "id": case_id} for case_id, p in found.items()]
    return _nonempty(datalist, root, f"<id>/{h5_name} or '2018LA_Seg_Training Set/<id>/{h5_name}'")


# ------------------------------------------------------------------------------------------ MSD
def _strip_suffixes(name: str) -> str:
    for suffix in (*VOLUME_SUFFIXES, ".h5"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _msd_path(base: Path, value: Any, json_path: Path) -> Path:
    if not isinstance(value, str):
        raise InvalidInputError(f"{json_path}: expected a file path string, got {value!r}")
    path = _absolute(base / value)
    if not path.exists():
        raise MissingInputError(f"{path} listed in {json_path} does not exist")
    return path


def msd_datalist(root_or_json: PathLike, section: str = "training") -> list[dict[str, str]]:
    """Entries of one section of an MSD ``dataset.json``, paths resolved against the json's folder.

    Entries may be dicts (``{"image": ..., "label": ...}``, optionally an ``"id"``; else the image's
    file name is the case id) or, as in MSD ``"test"``, bare paths.
    Every listed file must exist: a missing one is reported now rather than mid-training.
    """
    path = _absolute(root_or_json)
    json_path = path / _MSD_JSON if path.is_dir() else path
    if not json_path.is_file():
        raise MissingInputError(f"MSD dataset description not found: {json_path}")
    description = json.loads(json_path.read_text())
    if section not in description:
        raise InvalidInputError(f"{json_path} has no section '{section}' (sections: {', '.join(map(str, description))})")
    base = json_path.parent
    datalist = []
    for item in description[section]:
        image = _msd_path(base, item["image"] if isinstance(item, dict) else item, json_path)
        label = (
            _msd_path(base, item["label"], json_path) if isinstance(item, dict) and item.get("label") else None
        )
        case_id = str(item["id"]) if isinstance(item, dict) and item.get("id") else _strip_suffixes(image.name)
        datalist.append(_entry(image, label, case_id))
    return _nonempty(datalist, base, f"entries in section '{section}' of {json_path}")


def write_msd_description(
    path: PathLike, entries: list[dict[str, str]], name: str, labels: dict[str, str] | None = None, **fields: Any
) -> Path:
    """Write an MSD ``dataset.json`` listing ``entries`` (``image`` and ``label`` paths) under "training".

    An entry without a ``label`` is listed with its image only (an unannotated scan: the splits put
    it in the unlabelled pool); an ``id`` is kept. ``labels`` defaults to background/foreground; extra ``fields``
    (``description``, ``modality``, ...) are written as given. Returns the file, which
    :func:`msd_datalist` reads back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    description = {
        "name": name,
        **fields,
        "tensorImageSize": "3D",
        "labels": labels or {"0": "background", "1": "foreground"},
        "numTraining": len(entries),
        "training": [{k: e[k] for k in ("id", "image", "label") if e.get(k)} for e in entries],
    }
    path.write_text(json.dumps(description, indent=2) + "\n")
    return path


def describe_volume_folder(root: PathLike, image_glob: str, label_name: str, name: str | None = None,
                           **fields: Any) -> Path:
    """Write ``<root>/dataset.json`` for volumes kept in any folder layout (e.g. one folder per patient).

    Every file matching ``image_glob`` (relative to ``root``, ``**`` allowed) is an image; its label
    is ``label_name`` resolved against the image's folder, with ``{stem}`` replaced by the image's
    name without extension (``"{stem}_mask.nii.gz"``, ``"mask.nii.gz"``, ``"../labels/{stem}.nii.gz"``).
    Images whose label file does not exist are listed unannotated (the unlabelled pool), as
    challenge releases with few annotations (CARE-LiSeg's GED4 scans) ship them. The label files
    themselves are never matched as images. Paths are stored relative to ``root``, and each case's
    id is its relative path (``Vendor_A_patient01_GED4``), since per-patient files share names.
    """
    root = _absolute(root)
    labels_seen: set[Path] = set()
    pairs: list[tuple[Path, Path | None]] = []
    for image in sorted(root.glob(image_glob)):
        if not image.is_file():
            continue
        label = (image.parent / label_name.format(stem=_strip_suffixes(image.name))).resolve()
        pairs.append((image.resolve(), label if label.is_file() else None))
        if label.is_file():
            labels_seen.add(label)
    pairs = [(image, label) for image, label in pairs if image not in labels_seen]
    if not pairs:
        raise MissingInputError(f"no image matches {image_glob!r} under {root}")
    entries = [{"id": re.sub(r"[^A-Za-z0-9_-]", "_", _strip_suffixes(os.path.relpath(image, root))),
                "image": os.path.relpath(image, root), "label": os.path.relpath(label, root) if label else None}
               for image, label in pairs]
    return write_msd_description(root / _MSD_JSON, entries, name or root.name, **fields)


def ph2_subset(ph2_root: PathLike, dest: PathLike, count: int) -> Path:
    """A PH2-layout folder (``images/``, ``masks/``) holding copies of the first ``count`` cases.

    For tests and benchmarks that need a few real cases in the layout a bundle reads.
    """
    import shutil

    dest = Path(dest)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "masks").mkdir(exist_ok=True)
    for entry in ph2_datalist(ph2_root)[:count]:
        shutil.copy(entry["image"], dest / "images")
        shutil.copy(entry["label"], dest / "masks")
    return dest


def dermoscopy_fold_folders(root: PathLike, dest: PathLike, num_folds: int = 5, seed: int = 0) -> list[tuple[Path, Path]]:
    """In-domain test folders: a labelled dermoscopy folder (ISIC or PH2 layout) cut into ``num_folds``
    folds, fold ``k`` written as ``dest/fold<k>/train`` (the other folds: the train pool) and
    ``dest/fold<k>/test`` (the fold).

    Why: a method tuned on one test set can look better than it is; scoring it on held-out folds of
    its own train pool as well shows whether a gain holds in-domain (``samssl-compare --folds``).
    Both folders have the PH2 layout every dermoscopy bundle reads (``images/<id>.<ext>``,
    ``masks/<id>_lesion.<ext>``), holding links to the original files (copies where the file system
    has no links). Deterministic for a seed (:func:`samssl.data.kfold_splits`); writing the same
    folds again changes nothing. Returns ``[(train_dir, test_dir), ...]`` by fold.
    """
    import os
    import shutil

    from samssl.data.splits import kfold_splits

    folders = []
    for k, fold in enumerate(kfold_splits(dermoscopy_datalist(root), num_folds=num_folds, seed=seed)):
        pair = []
        for part, entries in (("train", fold["train"]), ("test", fold["val"])):
            part_root = Path(dest) / f"fold{k}" / part
            for key, sub, ending in (("image", "images", ""), ("label", "masks", "_lesion")):
                (part_root / sub).mkdir(parents=True, exist_ok=True)
                for entry in entries:
                    source = Path(entry[key]).resolve()
                    target = part_root / sub / f"{entry['id']}{ending}{source.suffix}"
                    if target.exists() or target.is_symlink():
                        continue
                    try:
                        os.symlink(source, target)
                    except FileExistsError:  # written meanwhile by another process cutting the same folds
                        continue
                    except OSError:
                        shutil.copy(source, target)
            pair.append(part_root)
        folders.append((pair[0], pair[1]))
    return folders


def msd_subset(root_or_json: PathLike, dest: PathLike, count: int, name: str = "subset") -> Path:
    """A folder whose ``dataset.json`` lists the first ``count`` cases by id of an MSD dataset, in place."""
    entries = sorted(msd_datalist(root_or_json), key=lambda e: e["id"])[:count]
    return write_msd_description(Path(dest) / "dataset.json", entries, name=name).parent


# ------------------------------------------------------------------------------- volumes (auto)
def volume_datalist(root: PathLike, **kwargs: Any) -> list[dict[str, str]]:
    """MSD (``dataset.json``) or UA-MT h5 layout, whichever ``root`` has (MSD first).

    Extra keyword arguments go to the builder that is chosen.
    """
    path = _absolute(root)
    if path.is_file() and path.suffix == ".json":
        return msd_datalist(path, **kwargs)
    root = _existing_dir(path, "volume dataset")
    if (root / _MSD_JSON).is_file():
        return msd_datalist(root, **kwargs)
    if (root / "train.list").is_file() or any(
        (root / sub).is_dir() and any((root / sub).glob(f"*/{_UAMT_H5_NAME}")) for sub in _UAMT_CASE_DIRS
    ):
        kwargs.setdefault("list_file", "train.list" if (root / "train.list").is_file() else None)
        return uamt_h5_datalist(root, **kwargs)
    raise UnknownLayoutError(
        f"{root} is neither an MSD nor a UA-MT h5 dataset folder: looked for '{_MSD_JSON}' (MSD), "
        f"'train.list' or '<id>/{_UAMT_H5_NAME}' / '2018LA_Seg_Training Set/<id>/{_UAMT_H5_NAME}' (UA-MT)"
    )


def nifti_datalist(path: str) -> list[dict[str, str]]:
    """``[{"image": file}]`` for one NIfTI file or every ``*.nii``/``*.nii.gz`` in a folder (sorted).

    Fails loudly for a missing path or a folder without volumes, rather than writing nothing.
    """
    target = Path(str(path)).expanduser()
    if not str(path).strip() or not target.exists():
        raise MissingInputError(f"inference input {str(path)!r} does not exist: pass --input <volume.nii.gz or folder>")
    if target.is_file():
        return [{"image": str(target.resolve())}]
    files = sorted(p for p in target.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise MissingInputError(f"no .nii/.nii.gz volume in {target}")
    return [{"image": str(p.resolve())} for p in files]
