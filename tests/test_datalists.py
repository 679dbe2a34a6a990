"""Datalist builders on the real layouts, and the split guarantees other code relies on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from samssl.data import (
    UnknownLayoutError,
    dermoscopy_datalist,
    image_folder_datalist,
    isic_datalist,
    kfold_splits,
    load_datalist,
    msd_datalist,
    ph2_datalist,
    prepare_split,
    split_labelled,
    uamt_h5_datalist,
    volume_datalist,
    write_datalist,
)


def _assert_well_formed(datalist: list[dict], labelled: bool = True) -> None:
    ids = [entry["id"] for entry in datalist]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for entry in datalist:
        assert Path(entry["image"]).is_absolute() and Path(entry["image"]).is_file()
        if labelled:
            assert Path(entry["label"]).is_file()
        else:
            assert "label" not in entry


# ------------------------------------------------------------------------------- real layouts
def test_ph2_datalist(ph2_root: Path) -> None:
    datalist = ph2_datalist(ph2_root)
    assert len(datalist) == 200
    _assert_well_formed(datalist)
    first = datalist[0]
    assert Path(first["label"]).name == f"{first['id']}_lesion.png"
    assert dermoscopy_datalist(ph2_root) == datalist


def test_dermoscopy_fold_folders_hold_every_case_once_in_a_test_fold_and_never_in_its_own_train_pool(
        ph2_root: Path, tmp_path: Path) -> None:
    from samssl.data import dermoscopy_fold_folders

    folders = dermoscopy_fold_folders(ph2_root, tmp_path / "folds", num_folds=4, seed=0)
    everything = {e["id"] for e in ph2_datalist(ph2_root)}
    tested = []
    for train_dir, test_dir in folders:
        train, test = ({e["id"] for e in ph2_datalist(d)} for d in (train_dir, test_dir))
        assert not train & test and train | test == everything
        tested += sorted(test)
    assert sorted(tested) == sorted(everything) and len(folders) == 4
    assert dermoscopy_fold_folders(ph2_root, tmp_path / "folds", num_folds=4, seed=0) == folders, "written again: the same"


def test_dermoscopy_fold_folders_of_an_isic_folder_are_read_as_ph2_folders(isic_root: Path, tmp_path: Path) -> None:
    from samssl.data import dermoscopy_fold_folders

    folders = dermoscopy_fold_folders(isic_root, tmp_path / "folds", num_folds=3, seed=1)
    pairs = {e["id"]: e for train, test in folders[:1] for d in (train, test) for e in ph2_datalist(d)}
    assert sorted(pairs) == sorted(e["id"] for e in isic_datalist(isic_root))
    original = {e["id"]: e for e in isic_datalist(isic_root)}
    assert all(Path(e["label"]).resolve() == Path(original[i]["label"]).resolve() for i, e in pairs.items())


def test_isic_datalist(isic_root: Path) -> None:
    datalist = isic_datalist(isic_root)
    assert len(datalist) == 48
    _assert_well_formed(datalist)
    assert all(Path(e["label"]).name == f"{e['id']}_segmentation.png" for e in datalist)
    assert dermoscopy_datalist(isic_root) == datalist


def test_msd_datalist(la_root: Path) -> None:
    datalist = msd_datalist(la_root)
    assert len(datalist) == 80
    _assert_well_formed(datalist)
    assert datalist[0]["id"] == Path(datalist[0]["image"]).name.removesuffix(".nii.gz")
    assert msd_datalist(la_root / "dataset.json") == datalist
    assert volume_datalist(la_root) == datalist


def test_uamt_h5_datalist(la_h5_root: Path) -> None:
    datalist = uamt_h5_datalist(la_h5_root)
    assert len(datalist) == 4
    _assert_well_formed(datalist)
    assert all(e["image"] == e["label"] and Path(e["image"]).parent.name == e["id"] for e in datalist)
    assert volume_datalist(la_h5_root) == datalist
    assert uamt_h5_datalist(la_h5_root, list_file=None) == datalist


# -------------------------------------------------------------------- layout variants (tmp)
def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_isic_2018_prefixes_subsets_and_unlabelled(tmp_path: Path) -> None:
    # ISIC 2018 names inputs and ground truth with different task prefixes
    _touch(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000001.jpg")
    _touch(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000002.jpg")
    _touch(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000002_superpixels.png")
    _touch(tmp_path / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt")
    _touch(tmp_path / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png")
    _touch(tmp_path / "ISIC2018_Task1-2_Validation_Input" / "ISIC_0000009.jpg")
    _touch(tmp_path / "ISIC2018_Task1_Validation_GroundTruth" / "ISIC_0000009_segmentation.png")

    with pytest.raises(ValueError, match="several ISIC input folders"):
        isic_datalist(tmp_path)
    with pytest.raises(ValueError, match=r"1 image\(s\) .* have no mask: ISIC_0000002.*allow_unlabelled"):
        isic_datalist(tmp_path, subset="Training")
    training = isic_datalist(tmp_path, subset="training", allow_unlabelled=True)
    assert [e["id"] for e in training] == ["ISIC_0000001", "ISIC_0000002"]
    assert "label" in training[0] and "label" not in training[1]
    validation = isic_datalist(tmp_path, subset="Validation")
    assert [Path(e["label"]).parent.name for e in validation] == ["ISIC2018_Task1_Validation_GroundTruth"]


def test_isic_2016_2017_download_names(tmp_path: Path) -> None:
    _touch(tmp_path / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg")
    _touch(tmp_path / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000001_Segmentation.png")  # 2016 spelling
    _touch(tmp_path / "ISIC-2017_Test_v2_Data" / "ISIC_0000005.jpg")
    _touch(tmp_path / "ISIC-2017_Test_v2_Part1_GroundTruth" / "ISIC_0000005_segmentation.png")
    test = isic_datalist(tmp_path, subset="test")
    assert [(e["id"], Path(e["label"]).parent.name) for e in test] == [
        ("ISIC_0000005", "ISIC-2017_Test_v2_Part1_GroundTruth")
    ]
    assert isic_datalist(tmp_path, subset="Training")[0]["label"].endswith("ISIC_0000001_Segmentation.png")


def test_ph2_original_nested_layout(tmp_path: Path) -> None:
    nested = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    for case in ("IMD003", "IMD002"):
        _touch(nested / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
        _touch(nested / case / f"{case}_lesion" / f"{case}_lesion.bmp")
    datalist = dermoscopy_datalist(tmp_path)
    assert [e["id"] for e in datalist] == ["IMD002", "IMD003"]
    assert datalist[0]["label"].endswith("IMD002_lesion.bmp")


def test_image_folder_datalist(ph2_root: Path, tmp_path: Path) -> None:
    for name in ("IMD002.jpg", "IMD003.jpg"):
        shutil.copy(ph2_root / "images" / name, tmp_path / name)
    _touch(tmp_path / "notes.txt")
    datalist = image_folder_datalist(tmp_path)
    assert [e["id"] for e in datalist] == ["IMD002", "IMD003"]
    _assert_well_formed(datalist, labelled=False)


def test_uamt_list_with_paths_and_missing_case(la_h5_root: Path, tmp_path: Path) -> None:
    case_ids = [e["id"] for e in uamt_h5_datalist(la_h5_root)]
    list_file = tmp_path / "paths.list"
    list_file.write_text(f"../data/2018LA_Seg_Training Set/{case_ids[1]}/mri_norm2.h5\n\n{case_ids[0]}\n")
    assert [e["id"] for e in uamt_h5_datalist(la_h5_root, list_file=str(list_file))] == sorted(case_ids[:2])
    list_file.write_text(f"{case_ids[0]}\nNOT_A_CASE\n")
    with pytest.raises(FileNotFoundError, match="case 'NOT_A_CASE' listed in .*paths.list not found"):
        uamt_h5_datalist(la_h5_root, list_file=str(list_file))


def test_msd_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "imagesTr/a.nii.gz", "label": "x"}]}))
    with pytest.raises(FileNotFoundError, match=r"imagesTr/a.nii.gz listed in .*dataset.json does not exist"):
        msd_datalist(tmp_path)
    with pytest.raises(ValueError, match="no section 'validation'"):
        msd_datalist(tmp_path, section="validation")


@pytest.mark.parametrize(
    "builder", [isic_datalist, ph2_datalist, image_folder_datalist, dermoscopy_datalist, uamt_h5_datalist,
                msd_datalist, volume_datalist]
)
def test_missing_root_raises_file_not_found(builder, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not_here"):
        builder(tmp_path / "not_here")


def test_empty_folders_raise_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match=r"no image/label pairs found in .*: expected images/IMDxxx.jpg"):
        ph2_datalist(tmp_path)
    (tmp_path / "X_Input").mkdir()
    with pytest.raises(ValueError, match="no image/label pairs found in .*ISIC_x_segmentation.png"):
        isic_datalist(tmp_path)
    with pytest.raises(ValueError, match="no images found in"):
        image_folder_datalist(tmp_path / "masks")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UnknownLayoutError, match=r"neither an ISIC nor a PH2 .*'\*_Input'.*'images/'"):
        dermoscopy_datalist(other)
    with pytest.raises(UnknownLayoutError, match="neither an MSD nor a UA-MT h5.*dataset.json"):
        volume_datalist(other)
    with pytest.raises(UnknownLayoutError, match="neither an MSD .* and .*neither an ISIC"):
        prepare_split(other, tmp_path / "split.json", num_labelled=1)


# -------------------------------------------------------------------------------------- splits
def _toy_datalist(n: int) -> list[dict[str, str]]:
    return [{"image": f"d/img{i:02d}.png", "label": f"d/seg{i:02d}.png", "id": f"case{i:02d}"} for i in range(n)]


def test_split_is_deterministic_and_hides_unlabelled_labels() -> None:
    datalist = _toy_datalist(20)
    split = split_labelled(datalist, num_labelled=4, seed=3, num_val=5)
    assert [len(split[k]) for k in ("labelled", "unlabelled", "validation")] == [4, 11, 5]
    assert split == split_labelled(list(reversed(datalist)), num_labelled=4, seed=3, num_val=5)
    assert split["labelled"] != split_labelled(datalist, num_labelled=4, seed=4, num_val=5)["labelled"]
    assert all("label" not in e for e in split["unlabelled"])
    assert all("label" in e for e in split["labelled"] + split["validation"])
    ids = [e["id"] for part in split.values() for e in part]
    assert sorted(ids) == [e["id"] for e in datalist]
    assert all("label" in e for e in datalist), "the input datalist must not be modified"


def test_split_by_fraction_and_never_labelled_entries() -> None:
    datalist = _toy_datalist(22)
    datalist[0].pop("label")
    datalist[1].pop("label")
    split = split_labelled(datalist, fraction=0.1, num_val=0)  # 10% of the 20 labelled cases
    assert len(split["labelled"]) == 2 and len(split["unlabelled"]) == 20
    assert {"case00", "case01"} <= {e["id"] for e in split["unlabelled"]}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_labelled": 0}, "num_labelled must be between 1 and 10"),
        ({"num_labelled": 11}, "num_labelled must be between 1 and 10"),
        ({"num_labelled": 8, "num_val": 4}, r"between 1 and 6 .*less 4 for validation"),
        ({}, "exactly one of num_labelled or fraction"),
        ({"num_labelled": 2, "fraction": 0.5}, "exactly one of num_labelled or fraction"),
        ({"fraction": 1.5}, r"fraction must be in \(0, 1\]"),
    ],
)
def test_split_rejects_bad_counts(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_labelled(_toy_datalist(10), **kwargs)


def test_split_rejects_empty_and_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="empty datalist"):
        split_labelled([], num_labelled=1)
    with pytest.raises(ValueError, match="duplicates: case00"):
        split_labelled(_toy_datalist(3) + _toy_datalist(1), num_labelled=1)


def test_kfold_covers_every_case_once() -> None:
    datalist = _toy_datalist(11)
    folds = kfold_splits(datalist, num_folds=3, seed=1)
    val_ids = [e["id"] for fold in folds for e in fold["val"]]
    assert sorted(val_ids) == [e["id"] for e in datalist]
    for fold in folds:
        assert not {e["id"] for e in fold["train"]} & {e["id"] for e in fold["val"]}
        assert len(fold["train"]) + len(fold["val"]) == 11
    assert folds == kfold_splits(list(reversed(datalist)), num_folds=3, seed=1)
    with pytest.raises(ValueError, match="num_folds must be between 2 and the number of cases"):
        kfold_splits(datalist, num_folds=12)


def test_write_and_load_datalist_round_trip(tmp_path: Path) -> None:
    split = split_labelled(_toy_datalist(6), num_labelled=2, num_val=1)
    path = write_datalist(tmp_path / "nested" / "split.json", split)
    loaded = load_datalist(path)
    assert loaded == split and list(loaded) == ["labelled", "unlabelled", "validation"]
    assert path.read_text().startswith('{\n  "labelled"')
    with pytest.raises(FileNotFoundError, match="datalist file not found"):
        load_datalist(tmp_path / "missing.json")


def test_prepare_split_on_real_layouts(ph2_root: Path, la_root: Path, tmp_path: Path) -> None:
    split = prepare_split(ph2_root, tmp_path / "ph2.json", num_labelled=20, seed=0, num_val=20)
    assert load_datalist(tmp_path / "ph2.json") == split
    assert [len(split[k]) for k in ("labelled", "unlabelled", "validation")] == [20, 160, 20]
    assert split == prepare_split(ph2_root, tmp_path / "again.json", num_labelled=20, seed=0, num_val=20, layout="ph2")
    la_split = prepare_split(la_root, tmp_path / "la.json", fraction=0.1, seed=0)
    assert len(la_split["labelled"]) == 8 and all("label" not in e for e in la_split["unlabelled"])
    with pytest.raises(ValueError, match="unknown layout 'nifti'"):
        prepare_split(la_root, tmp_path / "x.json", num_labelled=1, layout="nifti")


def test_patient_folders_with_few_masks_become_an_msd_description(tmp_path: Path) -> None:
    """A CARE-LiSeg-like release: a folder per patient, GED4 scans, a liver mask for some of them."""
    import nibabel as nib
    import numpy as np

    from samssl.data import describe_volume_folder, prepare_split, volume_transforms

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    for i in range(4):
        folder = tmp_path / f"Vendor_A/patient{i:02d}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.random.default_rng(i).normal(size=(12, 10, 6)).astype(np.float32), affine),
                 str(folder / "GED4.nii.gz"))
        if i < 2:
            mask = np.zeros((12, 10, 6), np.uint8)
            mask[3:8, 3:7, 1:5] = 1
            nib.save(nib.Nifti1Image(mask, affine), str(folder / "GED4_mask.nii.gz"))

    path = describe_volume_folder(tmp_path, "**/GED4*.nii.gz", "GED4_mask.nii.gz")

    cases = json.loads(path.read_text())["training"]
    assert [c["image"] for c in cases] == [f"Vendor_A/patient{i:02d}/GED4.nii.gz" for i in range(4)]  # masks not images
    assert cases[0]["id"] == "Vendor_A_patient00_GED4"  # the file names repeat across patients
    assert sum("label" in c for c in cases) == 2
    split = prepare_split(tmp_path, tmp_path / "split.json", num_labelled=1, num_val=1)
    assert len(split["labelled"]) == 1 and len(split["validation"]) == 1
    assert sorted(Path(e["image"]).parent.name for e in split["unlabelled"]) == ["patient02", "patient03"]
    label = volume_transforms("eval")(split["labelled"][0])["label"]
    assert set(label.unique().tolist()) == {0.0, 1.0} and int(label.sum()) == 5 * 4 * 4
    # an MSD-liver-style mask (liver 1, tumour 2) is refused by name, not silently merged
    mask_file = Path(split["labelled"][0]["label"])
    mask = nib.load(str(mask_file))
    values = np.asarray(mask.dataobj).copy()
    values[4:6, 4:6, 2:4] = 2
    nib.save(nib.Nifti1Image(values, mask.affine), str(mask_file))
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the transform's own error
        volume_transforms("eval")(split["labelled"][0])
    assert "GED4_mask.nii.gz has values [0.0, 1.0, 2.0], not a binary mask" in str(info.value.__cause__)
    with pytest.raises(FileNotFoundError, match="no image matches"):
        describe_volume_folder(tmp_path, "**/T2.nii.gz", "mask.nii.gz")
