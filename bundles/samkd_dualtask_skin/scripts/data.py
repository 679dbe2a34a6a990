"""The train split of a run, with the paper's k-fold cross-validation as an option.

Without ``num_folds`` this is ``samssl.data.prepare_split``. With it (the paper: 5 folds), fold
``fold`` of a seeded k-fold partition of the labelled cases is held out as the validation set and
the labelled/unlabelled split is drawn from the remaining folds; running ``fold = 0 .. k-1`` and
averaging the validation metrics gives the paper's mean +- std protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samssl.data import dermoscopy_datalist, kfold_splits, prepare_split, split_labelled, write_datalist

__all__ = ["prepare_fold_split"]


def prepare_fold_split(dataset_dir: str | Path, output_json: str | Path, num_labelled: int | None = None,
                       fraction: float | None = None, seed: int = 0, num_val: int = 0,
                       num_folds: int | None = None, fold: int = 0,
                       run_settings: Mapping[str, Any] | None = None) -> dict:
    """``{"labelled", "unlabelled", "validation"}`` lists, written to ``output_json``.

    ``run_settings``: as in ``samssl.data.prepare_split``, the run folder is claimed for this split
    and these settings, and refused if it holds another run.
    """
    if not num_folds:
        return prepare_split(dataset_dir, output_json, num_labelled=num_labelled, fraction=fraction, seed=seed,
                             num_val=num_val, run_settings=run_settings)
    if num_val:
        raise ValueError("with num_folds the validation set is the held-out fold; leave num_val at 0")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    folds = kfold_splits(dermoscopy_datalist(Path(dataset_dir).expanduser()), num_folds=num_folds, seed=seed)
    split = split_labelled(folds[fold]["train"], num_labelled=num_labelled, fraction=fraction, seed=seed)
    split["validation"] = folds[fold]["val"]
    write_datalist(output_json, split, run_settings=run_settings)
    return split
