"""A bundle's comparison, as it declares it once in ``configs/variants.json``.

The harness is generic; what it compares is the bundle's business: which variants exist (each an
ordered list of the bundle's override files and ``key value`` overrides on top of ``train.json``),
which one is the method, which one is the SupOnly baseline, what data the runs read and which
metrics the tables report. Declaring that beside the configs it refers to keeps a new variant a
one-file change in the bundle, and lets a downloaded bundle be compared with no project code.

File format (every key but ``variants``, ``method`` and ``baseline`` is optional)::

    {
      "description": "help text of samssl-compare BUNDLE",
      "dataset": "LA MRI",                      # the leaderboard's board this bundle sits on
      "data": "msd",                            # or "dermoscopy": which data options the runs take
      "num_labelled": 4,                        # default --num_labelled (8 dermoscopy, 4 msd)
      "method": "mean_teacher_sfr",
      "baseline": "suponly",
      "default_variants": ["suponly", "mean_teacher_sfr"],
      "metrics": ["dice", "hd95"], "tested_metrics": ["dice"], "distance_unit": "mm",
      "sam_cache_key": "sam#cache_dir", "seed_shared_key": "sfr#work_dir", "notes": "...",
      "variants": {
        "suponly": {"label": "SupOnly", "configs": ["baselines/suponly.json"]},
        "mean_teacher_sfr": {"label": "MT + SFR", "overrides": {"run_name": "mean_teacher_sfr"}}
      }
    }

``configs`` are relative to the bundle's ``configs/`` folder and merged in order after
``train.json`` and the preset; ``overrides`` become ``--key value`` arguments in their written
order (``true``/``false`` are written ``True``/``False``, the only booleans MONAI's command line knows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_KINDS",
    "DERMOSCOPY_METRICS",
    "VARIANTS_FILE",
    "BundleExperiment",
    "Variant",
    "VariantsError",
    "bundle_names",
    "find_bundle",
    "load_variants",
]

VARIANTS_FILE = Path("configs") / "variants.json"
DERMOSCOPY_METRICS = ("dice", "iou", "sensitivity", "specificity")
VOLUME_METRICS = ("dice", "iou", "hd95", "asd", "hd95_voxel", "asd_voxel")
DATA_KINDS = {"dermoscopy": (DERMOSCOPY_METRICS, 8), "msd": (VOLUME_METRICS, 4)}  # kind -> default metrics, labelled

_TOP_KEYS = frozenset({"description", "dataset", "data", "num_labelled", "method", "baseline", "default_variants",
                       "metrics", "tested_metrics", "distance_unit", "sam_cache_key", "seed_shared_key", "notes",
                       "variants"})
_REQUIRED_KEYS = ("method", "baseline", "variants")
_VARIANT_KEYS = frozenset({"label", "configs", "overrides"})


class VariantsError(ValueError):
    """A ``variants.json`` that cannot describe a comparison; the message names the file and the fix."""


@dataclass(frozen=True)
class Variant:
    """One row of a comparison: its table label, override config files (bundle-relative, in merge
    order) and the ``--key value`` arguments appended to its training command."""

    label: str
    configs: Sequence[str] = ()
    overrides: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class BundleExperiment:
    """What the harness needs to know of a bundle to compare its variants.

    Attributes:
        bundle: the bundle's name (its folder's name).
        bundle_dir: the bundle folder (holds ``configs/``).
        variants: run-folder name -> :class:`Variant`.
        method: the variant the paired tests put against each other variant.
        baseline: the SupOnly variant (labelled data only) the leaderboard puts the method against.
        default_variants: run when ``--variants`` is not given.
        data: ``"dermoscopy"`` (ISIC/PH2-style train pool and test folders) or ``"msd"`` (an MSD-style
            3D folder split by sorted id into a pool and a test set).
        num_labelled: default number of labelled training cases.
        dataset: name of the data set of the bundle's reported comparisons (groups the leaderboard).
        metrics: table columns (``samssl.metrics`` names); ``tested_metrics`` get paired tests.
        distance_unit: unit printed next to HD95/ASD.
        sam_cache_key: the bundle's config key for its SAM embedding cache folder; the harness's
            ``--sam_cache_dir`` sets it (by default every run uses the bundle's default, the one
            folder shared by all runs and bundles, so each image is encoded once for all runs).
        seed_shared_key: a config key for work that depends on the seed but not on the variant
            (SFR's fine-tuned SAM and pseudo-labels): every run of one seed gets ``<out>/seed<k>/shared``.
        notes: printed under the tables.
        description: the help text of ``samssl-compare BUNDLE``.
    """

    bundle: str
    bundle_dir: Path
    variants: Mapping[str, Variant]
    method: str
    baseline: str
    default_variants: Sequence[str]
    data: str = "dermoscopy"
    num_labelled: int = 8
    dataset: str = ""
    metrics: Sequence[str] = DERMOSCOPY_METRICS
    tested_metrics: Sequence[str] = ("dice",)
    distance_unit: str | None = None
    sam_cache_key: str | None = None
    seed_shared_key: str | None = None
    notes: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [n for n in (self.method, self.baseline, *self.default_variants) if n not in self.variants]
        where = self.bundle_dir / VARIANTS_FILE
        if unknown:
            raise VariantsError(f"{where}: variant(s) {unknown} named but not declared under 'variants' "
                                f"(declared: {sorted(self.variants)}).")
        if self.data not in DATA_KINDS:
            raise VariantsError(f"{where}: 'data' must be one of {sorted(DATA_KINDS)}, got {self.data!r}.")

    @property
    def project_root(self) -> Path:
        """The folder holding ``bundles/`` (the bundle's own parent for a bundle outside one).

        Recorded data paths are relative to it, so a comparison's settings (and a results file
        copied into the docs) name no machine's folders and compare equal wherever the checkout is.
        """
        parent = self.bundle_dir.parent
        return parent.parent if parent.name == "bundles" else parent


def bundle_names(bundles_dir: str | Path) -> list[str]:
    """The bundles under ``bundles_dir`` that declare a comparison (have ``configs/variants.json``)."""
    root = Path(bundles_dir)
    return sorted(p.name for p in root.iterdir() if (p / VARIANTS_FILE).is_file()) if root.is_dir() else []


def find_bundle(bundle: str | Path, bundles_dir: str | Path = "bundles") -> Path:
    """The folder of ``bundle``: a path to a bundle folder, or a name under ``bundles_dir``.

    Paths are made absolute without resolving symbolic links, so a bundle linked into a project
    keeps that project as its root.
    """
    for candidate in (Path(bundle), Path(bundles_dir) / bundle):
        if (candidate / VARIANTS_FILE).is_file():
            return Path(os.path.abspath(candidate))
    known = bundle_names(bundles_dir)
    raise VariantsError(f"no bundle {str(bundle)!r}: neither a folder with {VARIANTS_FILE} nor one under "
                        f"{os.path.abspath(bundles_dir)} (bundles there: {', '.join(known) or 'none'}).")


def _overrides(where: str, raw: Any) -> tuple[str, ...]:
    """``{"key": value}`` -> ``("--key", "value", ...)`` in the written order."""
    if not isinstance(raw, Mapping):
        raise VariantsError(f"{where}: 'overrides' must be an object of key: value, got {raw!r}.")
    arguments: list[str] = []
    for key, value in raw.items():
        if isinstance(value, (dict, list)) or value is None:
            raise VariantsError(f"{where}: override {key!r} must be a string, number or boolean, got {value!r}.")
        arguments += [f"--{key}", str(value)]  # str(True) == "True": the boolean MONAI's command line parses
    return tuple(arguments)


def _variant(where: str, configs_dir: Path, raw: Any) -> Variant:
    if not isinstance(raw, Mapping):
        raise VariantsError(f"{where}: a variant must be an object with 'label', 'configs', 'overrides'.")
    unknown = sorted(set(raw) - _VARIANT_KEYS)
    if unknown:
        raise VariantsError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(_VARIANT_KEYS)}).")
    if not isinstance(raw.get("label"), str):
        raise VariantsError(f"{where}: 'label' (the table row's name) is missing.")
    configs = raw.get("configs", [])
    if isinstance(configs, str) or not all(isinstance(c, str) for c in configs):
        raise VariantsError(f"{where}: 'configs' must be a list of files under configs/, got {configs!r}.")
    missing = [c for c in configs if not (configs_dir / c).is_file()]
    if missing:
        raise VariantsError(f"{where}: config file(s) {missing} do not exist under {configs_dir}.")
    return Variant(raw["label"], tuple(f"configs/{c}" for c in configs), _overrides(where, raw.get("overrides", {})))


def load_variants(bundle: str | Path, bundles_dir: str | Path = "bundles") -> BundleExperiment:
    """Read ``configs/variants.json`` of ``bundle`` (a folder, or a name under ``bundles_dir``).

    Raises:
        VariantsError: the bundle is not found, the file is not JSON, or it has a misspelt key, an
            undeclared variant, a missing override file or a value of the wrong kind; one line
            naming the file and what to change.
    """
    bundle_dir = find_bundle(bundle, bundles_dir)
    path = bundle_dir / VARIANTS_FILE
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise VariantsError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(raw, Mapping):
        raise VariantsError(f"{path}: must hold a JSON object.")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise VariantsError(f"{path}: unknown key(s) {unknown} (allowed: {sorted(_TOP_KEYS)}).")
    absent = [k for k in _REQUIRED_KEYS if k not in raw]
    if absent:
        raise VariantsError(f"{path}: missing key(s) {absent}.")
    if not isinstance(raw["variants"], Mapping) or not raw["variants"]:
        raise VariantsError(f"{path}: 'variants' must map run names to variants.")
    variants = {name: _variant(f"{path}: variant {name!r}", bundle_dir / "configs", v)
                for name, v in raw["variants"].items()}
    data = raw.get("data", "dermoscopy")
    default_metrics, default_labelled = DATA_KINDS.get(data, (DERMOSCOPY_METRICS, 8))
    num_labelled = raw.get("num_labelled", default_labelled)
    if not isinstance(num_labelled, int) or isinstance(num_labelled, bool) or num_labelled < 1:
        raise VariantsError(f"{path}: 'num_labelled' must be a positive integer, got {num_labelled!r}.")
    return BundleExperiment(
        bundle=bundle_dir.name,
        bundle_dir=bundle_dir,
        variants=variants,
        method=raw["method"],
        baseline=raw["baseline"],
        default_variants=tuple(raw.get("default_variants", variants)),
        data=data,
        num_labelled=num_labelled,
        dataset=raw.get("dataset", ""),
        metrics=tuple(raw.get("metrics", default_metrics)),
        tested_metrics=tuple(raw.get("tested_metrics", ("dice",))),
        distance_unit=raw.get("distance_unit"),
        sam_cache_key=raw.get("sam_cache_key"),
        seed_shared_key=raw.get("seed_shared_key"),
        notes=raw.get("notes", ""),
        description=raw.get("description", ""),
    )
