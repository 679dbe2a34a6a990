"""Guards that keep FSL's rounds from collapsing onto weak pseudo-labels (not in the paper).

Algorithm 1 re-trains on its own output with nothing to pull it back. On LA with 4 labelled
volumes and LiteMedSAM's pseudo-labels (32 Dice), one round dropped the pool's pseudo-labels to 15
Dice and the deployed ensemble predicted nothing (``docs/README.md``): about 44 pseudo-labelled
volumes against 4 labelled ones taught background, and the next round trained on that. Three
guards, each switchable (``fsl#guards`` in the configs, :class:`FSLGuards`):

1. **labelled share**: every training batch holds at least ``labelled_share`` labelled patches
   (:class:`samssl.data.samplers.LabelledShareBatchSampler`), so the true labels are never swamped.
2. **plausibility filter** (:func:`screen_pseudo_labels`): a pseudo-label that is empty, or whose
   foreground volume (mm^3, from each file's own header, so any grid compares) lies outside
   ``[min_volume_factor x smallest, max_volume_factor x largest]`` labelled foreground, is left out
   of that round's training (it is still re-predicted, so it can come back next round).
3. **stopping rule** (:func:`agreement_decision`): without ground truth, the agreement (mean Dice)
   between a round's re-predictions and the pseudo-labels it trained from measures whether the
   rounds converge (Algorithm 1's "while not converge"). When it falls below the previous round's,
   the round made things worse: the rounds stop and the previous round's folds are deployed.

``fsl#guards: false`` (or ``{"enabled": false}``) turns all three off: the paper's plain Algorithm 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samssl.metrics import binary_dice
from samssl.utils.config_checks import SettingsDict
from samssl.utils.errors import InvalidInputError
from samssl.utils.files import atomic_write_json

# per round: screened pseudo-labels, agreement, the decision so far. Only rounds <= r decide it, so
# runs sharing the rounds (TFFS + 1 round is the full run's first round) write the same record.
ROUND_RECORD = "round.json"

__all__ = ["ROUND_RECORD", "FSLGuards", "RoundGuard", "agreement_decision", "dice_of_files", "foreground_volume_mm3", "label_agreement",
           "plausible_volume_range", "screen_pseudo_labels"]


class FSLGuards(SettingsDict):
    """The FSL guards' settings (``fsl#guards``); :meth:`resolve` also takes ``true`` / ``false``.

    Keys: ``enabled`` (False: the paper's plain Algorithm 1, every guard off), ``labelled_share``
    (the labelled floor of each batch, 0.5; 0: off), ``filter_pseudo_labels`` (True),
    ``min_volume_factor`` / ``max_volume_factor`` (0.25 / 4: the plausible foreground volume relative
    to the smallest / largest labelled one), ``stop_on_agreement_drop`` (True).
    """

    WHAT = "FSL guard settings (fsl#guards)"
    DEFAULTS: Mapping[str, Any] = {
        "enabled": True, "labelled_share": 0.5, "filter_pseudo_labels": True, "min_volume_factor": 0.25,
        "max_volume_factor": 4.0, "stop_on_agreement_drop": True,
    }

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(values)
        for key in ("enabled", "filter_pseudo_labels", "stop_on_agreement_drop"):
            if not isinstance(self[key], bool):
                raise InvalidInputError(f"fsl#guards#{key} must be True or False, got {self[key]!r} (on the command "
                                        f"line: --fsl#guards#{key} False)")
        if not 0.0 <= float(self["labelled_share"]) <= 1.0:
            raise InvalidInputError(f"fsl#guards#labelled_share is a fraction in [0, 1], got {self['labelled_share']}")
        low, high = float(self["min_volume_factor"]), float(self["max_volume_factor"])
        if not 0.0 <= low <= 1.0 <= high:
            raise InvalidInputError(f"fsl#guards needs 0 <= min_volume_factor <= 1 <= max_volume_factor, got {low} "
                                    f"and {high}")

    @classmethod
    def resolve(cls, value: bool | Mapping[str, Any] | None) -> FSLGuards:
        """``None``/``True``: the defaults; ``False``: all off; a mapping: the defaults updated."""
        if value is None or value is True:
            return cls()
        if value is False:
            return cls({"enabled": False})
        if isinstance(value, Mapping):
            return cls(value)
        raise InvalidInputError(f"fsl#guards must be True, False or a mapping of guard settings, got {value!r} "
                                "(on the command line: --fsl#guards False)")

    @property
    def share(self) -> float:
        """The labelled share in force (0 when off)."""
        return float(self["labelled_share"]) if self["enabled"] else 0.0

    @property
    def filtering(self) -> bool:
        return bool(self["enabled"] and self["filter_pseudo_labels"])

    @property
    def stopping(self) -> bool:
        return bool(self["enabled"] and self["stop_on_agreement_drop"])


def _read_mask(path: str | Path) -> tuple[np.ndarray, float]:
    """A label file's foreground mask and its voxel volume in mm^3 (from the header's spacing)."""
    import nibabel as nib  # NIfTI files; a lazy import keeps the module light

    image = nib.load(str(path))
    zooms = image.header.get_zooms()[:3]
    return np.asanyarray(image.dataobj) > 0, float(np.prod([float(z) for z in zooms]))


def foreground_volume_mm3(path: str | Path) -> float:
    """Foreground volume of a label file in mm^3 (voxel count x voxel volume of its own grid)."""
    mask, voxel = _read_mask(path)
    return float(mask.sum()) * voxel


def plausible_volume_range(labelled_volumes: Sequence[float], min_factor: float = 0.25, max_factor: float = 4.0
                           ) -> tuple[float, float]:
    """``(min_factor x smallest, max_factor x largest)`` of the labelled foreground volumes (mm^3)."""
    if not labelled_volumes:
        raise ValueError("the plausible range is drawn from the labelled volumes: none given")
    return float(min_factor) * min(labelled_volumes), float(max_factor) * max(labelled_volumes)


def screen_pseudo_labels(pseudo: Mapping[str, str], volume_range: tuple[float, float], where: str | Path,
                         volumes: Mapping[str, float] | None = None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Split pseudo-labels into ``(kept, excluded)``: excluded when empty or outside ``volume_range``.

    ``pseudo`` maps each image to its pseudo-label file; ``volumes`` (image -> mm^3) skips reading
    files whose volume is known. Each excluded record holds the image, the file, its volume, the
    range and why; a warning names them (``where``: the round, in the message).
    """
    low, high = volume_range
    kept: dict[str, str] = {}
    excluded: list[dict[str, Any]] = []
    for image in sorted(pseudo):
        volume = float(volumes[image]) if volumes and image in volumes else foreground_volume_mm3(pseudo[image])
        reason = ("empty" if volume <= 0.0 else f"below {low:.0f} mm^3" if volume < low
                  else f"above {high:.0f} mm^3" if volume > high else None)
        if reason is None:
            kept[image] = pseudo[image]
        else:
            excluded.append({"image": image, "pseudo_label": pseudo[image], "volume_mm3": round(volume, 1),
                             "range_mm3": [round(low, 1), round(high, 1)], "reason": reason})
    if excluded:
        shown = ", ".join(f"{Path(e['image']).name} ({e['reason']}: {e['volume_mm3']:.0f} mm^3)" for e in excluded[:5])
        warnings.warn(f"{where}: {len(excluded)} of {len(pseudo)} pseudo-labels left out of training as implausible "
                      f"(foreground outside {low:.0f}-{high:.0f} mm^3, drawn from the labelled volumes): {shown}"
                      f"{', ...' if len(excluded) > 5 else ''}. They are still re-predicted; fsl#guards#"
                      "filter_pseudo_labels False keeps them.", stacklevel=2)
    return kept, excluded


def dice_of_files(a: str | Path, b: str | Path) -> float:
    """Dice of two label files on the same grid; 1.0 when both are empty (they agree)."""
    mask_a, _ = _read_mask(a)
    mask_b, _ = _read_mask(b)
    if mask_a.shape != mask_b.shape:
        raise InvalidInputError(f"{a} ({mask_a.shape}) and {b} ({mask_b.shape}) are not on one grid: pseudo-labels "
                                "are compared on their image's own grid")
    return binary_dice(mask_a, mask_b)


def label_agreement(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[float | None, dict[str, float]]:
    """Mean Dice between each image's label in ``before`` and in ``after`` (images in both); per image too.

    ``None`` when no image is in both (nothing to compare).
    """
    per_case = {image: round(dice_of_files(before[image], after[image]), 6) for image in sorted(before) if image in after}
    mean = float(np.mean(list(per_case.values()))) if per_case else None
    return mean, per_case


def agreement_decision(agreements: Sequence[float | None], tolerance: float = 0.0) -> tuple[bool, int]:
    """After the rounds so far (their agreements, in order): ``(stop, round to deploy)``.

    Stop when the last round's agreement is below the one before (by more than ``tolerance``):
    that round moved its re-predictions away from the pseudo-labels it learnt from, a sign of
    drift rather than refinement, so the previous round's folds are deployed. Otherwise go on
    (or, after the last round, deploy it). A round without an agreement (``None``: no pseudo-label
    was plausible) gives no evidence either way.
    """
    if not agreements:
        raise ValueError("no round has run: nothing to decide")
    last = len(agreements) - 1
    if last >= 1:
        current, previous = agreements[-1], agreements[-2]
        if (current is not None and previous is not None and not math.isnan(current) and not math.isnan(previous)
                and current < previous - tolerance):
            return True, last - 1
    return False, last


class RoundGuard:
    """The filter and the stopping rule over one run of rounds, for either FSL backend.

    Before round ``r``, :meth:`screen` splits its pseudo-labels into kept and excluded; after it,
    :meth:`after_round` scores the agreement of the round's re-predictions with the kept inputs,
    logs it, writes ``round.json`` into the round's folder (when ``write``: process 0) and says
    whether to stop; :attr:`deployed_round` is then the round whose folds to deploy.

    Args:
        guards: the settings (:class:`FSLGuards`).
        labelled_labels: the labelled volumes' label files (the plausible range comes from them).
        write: whether this process writes the records.
    """

    def __init__(self, guards: FSLGuards, labelled_labels: Sequence[str | Path], write: bool = True) -> None:
        self.guards = guards
        self.labelled_labels = [str(p) for p in labelled_labels]
        self.write = bool(write)
        self._volume_range: tuple[float, float] | None = None
        self.agreements: list[float | None] = []
        self.deployed_round: int | None = None

    def volume_range(self) -> tuple[float, float]:
        """The plausible pseudo-label foreground (mm^3), from the labelled volumes' labels (read once)."""
        if self._volume_range is None:
            volumes = [foreground_volume_mm3(label) for label in self.labelled_labels]
            self._volume_range = plausible_volume_range(volumes, float(self.guards["min_volume_factor"]),
                                                        float(self.guards["max_volume_factor"]))
        return self._volume_range

    def screen(self, r: int, pseudo: Mapping[str, str]) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """Round ``r``'s pseudo-labels as ``(kept, excluded)``; all kept when the filter is off."""
        if r == 0:
            self.agreements, self.deployed_round = [], None
        if not self.guards.filtering:
            return dict(pseudo), []
        return screen_pseudo_labels(pseudo, self.volume_range(), f"FSL round {r}")

    def after_round(self, r: int, kept: Mapping[str, str], excluded: Sequence[Mapping[str, Any]],
                    refreshed: Mapping[str, str], round_dir: str | Path) -> bool:
        """Score, log and record round ``r``; True when the rounds stop here (:attr:`deployed_round` is set)."""
        agreement, per_case = label_agreement(kept, refreshed)
        self.agreements.append(agreement)
        stop, deploy = agreement_decision(self.agreements)
        stop = stop and self.guards.stopping
        shown = "n/a (no plausible pseudo-label)" if agreement is None else f"{100 * agreement:.2f}"
        print(f"round {r}: {len(refreshed)} pseudo-labels refreshed, {len(excluded)} left out as implausible; "
              f"agreement with the pseudo-labels trained from (mean Dice, %): {shown}", flush=True)
        self.deployed_round = deploy if stop else r
        if self.write:
            atomic_write_json(Path(round_dir) / ROUND_RECORD, {
                "round": r, "pseudo_labels_kept": len(kept), "excluded_pseudo_labels": list(excluded),
                "plausible_volume_mm3": list(self._volume_range) if self._volume_range else None,
                "agreement": agreement, "agreement_per_case": dict(per_case),
                "agreement_per_round": list(self.agreements), "stopped_here": stop,
                "deploy_round": self.deployed_round, "guards": dict(self.guards)})
        if stop:
            warnings.warn(f"FSL stopped after round {r}: its agreement ({100 * agreement:.2f}) fell below round "
                          f"{r - 1}'s ({100 * self.agreements[-2]:.2f}), so round {r} drifted from the pseudo-labels "
                          f"it learnt from; deploying round {deploy}'s folds (fsl#guards#stop_on_agreement_drop "
                          "False runs every round)", stacklevel=3)
        return stop

    def summary(self) -> str:
        """One log line: the deployed round and the agreement per round."""
        shown = [None if a is None else round(100 * a, 2) for a in self.agreements]
        return f"FSL: deploying round {self.deployed_round}'s folds (agreement per round, mean Dice %: {shown})"
