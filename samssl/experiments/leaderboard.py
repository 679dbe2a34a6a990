"""One table per data set of every method against its own SupOnly, from the committed records alone.

Each bundle's comparisons are committed as harness ``results.json`` files under
``bundles/<name>/docs/results/``; each bundle's ``configs/variants.json`` says which data set its
reported comparison uses (``dataset``), at how many labelled cases (``num_labelled``) and which
variant is its SupOnly. The leaderboard puts every bundle of one data set on one board, each method
next to the SupOnly trained on the same labelled cases and seeds **in the same bundle** (SupOnly
networks differ between bundles, so a method is never compared with another bundle's baseline).
Nothing is trained or re-evaluated: the numbers are the per-case records' and match the bundles'
own reports (:mod:`samssl.experiments.report`) to the digit.

A bundle without a record at its board's labelled count is listed as not on the board, with the
folder that was searched; several records of one bundle at one count are joined as
``--earlier_results`` joins them (same settings, agreeing where they overlap).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samssl.experiments.records import Records, differing_settings, is_comparison_record
from samssl.experiments.report import paired_comparisons, seed_mean
from samssl.experiments.variants import BundleExperiment, bundle_names, load_variants
from samssl.metrics import PairedComparison

__all__ = ["MARKDOWN_FILE", "FIGURE_FILE", "Board", "Entry", "LeaderboardError", "collect_boards", "labelled_count",
           "render_markdown", "write_figure", "write_leaderboard"]

MARKDOWN_FILE = "leaderboard.md"
FIGURE_FILE = "leaderboard.png"
REGENERATE = "samssl-leaderboard"


class LeaderboardError(ValueError):
    """Committed records that cannot be put on one board (e.g. two records of one bundle disagree)."""


@dataclass(frozen=True)
class Entry:
    """One method against its own SupOnly: per-seed Dice (%) and the paired tests of Dice."""

    bundle: str
    method_label: str
    baseline_label: str
    seeds: tuple[int, ...]
    method_dice: tuple[float, ...]
    baseline_dice: tuple[float, ...]
    by_seed: PairedComparison
    by_case: PairedComparison
    sources: tuple[str, ...]
    settings: Mapping[str, Any] | None = None


@dataclass
class Board:
    """Every bundle of one data set at one labelled count: entries, and lines for those not on it."""

    dataset: str
    num_labelled: int
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset}, {self.num_labelled} labelled"


def labelled_count(document: Mapping[str, Any], path: Path) -> int | None:
    """The labelled count of a record: its settings', else the ``<n>_labelled`` in its file name
    (records made before settings were recorded), else None."""
    settings = document.get("settings") or {}
    if isinstance(settings.get("num_labelled"), int):
        return settings["num_labelled"]
    match = re.search(r"(?:^|_)(\d+)_labelled", path.stem)
    return int(match.group(1)) if match else None


def _mean_sd(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def _records_at(spec: BundleExperiment, root: Path) -> list[tuple[str, dict[str, Any]]]:
    """The bundle's committed comparison records at its labelled count: (path from the project root, content)."""
    folder = spec.bundle_dir / "docs" / "results"
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        document = json.loads(path.read_text())
        if is_comparison_record(document) and labelled_count(document, path) == spec.num_labelled:
            found.append((os.path.relpath(path, root), document))
    return found


def _join(spec: BundleExperiment, records: list[tuple[str, dict[str, Any]]],
          root: Path) -> tuple[Records, str, dict[str, str], Mapping[str, Any] | None]:
    """Join one bundle's records: (cases, method, labels, settings); refuses records of different comparisons."""
    cases: Records = {}
    labels: dict[str, str] = {}
    first_path, first = records[0]
    settings = next((d["settings"] for _, d in records if d.get("settings")), None)
    for path, document in records:
        if document["method"] != first["method"]:
            raise LeaderboardError(f"{spec.bundle}: {path} reports method {document['method']!r}, "
                                   f"{first_path} {first['method']!r}; keep one comparison per labelled count.")
        details = differing_settings(document["settings"], settings, root) if document.get("settings") else ""
        if details:
            raise LeaderboardError(f"{spec.bundle}: {path} is a comparison with other settings ({details}) "
                                   f"than the bundle's other records at {spec.num_labelled} labelled.")
        labels.update(document.get("variants", {}))
        for name, by_seed in document["cases"].items():
            for seed, cases_of_run in by_seed.items():
                known = cases.setdefault(name, {})
                if int(seed) in known and known[int(seed)] != cases_of_run:
                    raise LeaderboardError(f"{spec.bundle}: {name} seed {seed} differs between the records "
                                           f"{[p for p, _ in records]}; keep one of them.")
                known[int(seed)] = cases_of_run
    return cases, first["method"], labels, settings


def _entry_or_reason(spec: BundleExperiment, root: Path) -> Entry | str:
    """The bundle's entry on its board, or the line saying why it is not on it."""
    records = _records_at(spec, root)
    folder = os.path.relpath(spec.bundle_dir / "docs" / "results", root)
    if not records:
        return f"{spec.bundle}: no committed comparison record at {spec.num_labelled} labelled in {folder}."
    cases, method, labels, settings = _join(spec, records, root)
    baseline = next((d.get("baseline") for _, d in records if d.get("baseline")), spec.baseline)
    missing = [n for n in (method, baseline) if n not in cases]
    if missing:
        return f"{spec.bundle}: the records in {folder} hold no runs of {missing}."
    seeds = tuple(sorted(set(cases[method]) & set(cases[baseline])))
    if not seeds:
        return f"{spec.bundle}: the records in {folder} share no seed between {method} and {baseline}."
    by_seed, by_case = paired_comparisons(cases, method, baseline, seeds, "dice")
    return Entry(
        bundle=spec.bundle,
        method_label=labels.get(method, spec.variants[method].label if method in spec.variants else method),
        baseline_label=labels.get(baseline, baseline),
        seeds=seeds,
        method_dice=tuple(seed_mean(cases[method][s], "dice") for s in seeds),
        baseline_dice=tuple(seed_mean(cases[baseline][s], "dice") for s in seeds),
        by_seed=by_seed,
        by_case=by_case,
        sources=tuple(p for p, _ in records),
        settings=settings,
    )


def collect_boards(bundles_dir: str | Path) -> list[Board]:
    """One board per (data set, labelled count) over every bundle with a ``configs/variants.json``."""
    bundles_dir = Path(os.path.abspath(bundles_dir))
    root = bundles_dir.parent
    boards: dict[tuple[str, int], Board] = {}
    for name in bundle_names(bundles_dir):
        spec = load_variants(bundles_dir / name)
        dataset = spec.dataset or spec.bundle
        board = boards.setdefault((dataset, spec.num_labelled), Board(dataset, spec.num_labelled))
        entry = _entry_or_reason(spec, root)
        if isinstance(entry, Entry):
            board.entries.append(entry)
        else:
            board.skipped.append(entry)
    return [boards[key] for key in sorted(boards)]


def _settings_text(settings: Mapping[str, Any] | None) -> str:
    if not settings:
        return "settings not recorded"
    data = (f"train {settings['train_dir']}, test {settings['test_dir']}" if "train_dir" in settings
            else f"{settings.get('data')}, pool {settings.get('pool')}, test {settings.get('test')}")
    overrides = f", overrides {' '.join(settings['overrides'])}" if settings.get("overrides") else ""
    return f"{data}, preset {settings.get('preset') or 'none'}{overrides}"


def render_markdown(boards: Sequence[Board]) -> str:
    """The leaderboard page: how to read it, the figure, then one table per board."""
    lines = [
        "# Leaderboard",
        "",
        "Every method against **its own SupOnly** (the same bundle's labelled-only variant, trained on the same",
        "labelled cases and seeds), from the committed per-case records (`bundles/*/docs/results/*.json`) alone.",
        "Test-set Dice in %, mean ± sd over seeds, and each seed's value; *difference* is method minus SupOnly,",
        "with the seeds where the method is better/worse; *over test cases* pairs each case's Dice averaged over",
        "the seeds (Wilcoxon signed-rank test), which measures consistency across images, not across training runs",
        "(`samssl.metrics.comparison`).",
        "",
        f"Regenerate with `{REGENERATE}` (writes `docs/leaderboard/{MARKDOWN_FILE}` and `{FIGURE_FILE}`).",
        "",
        f"![Dice per seed, each method next to its SupOnly]({FIGURE_FILE})",
    ]
    for board in boards:
        lines += ["", f"## {board.title}", ""]
        if board.entries:
            lines += [
                "| bundle | method | seeds | method Dice | SupOnly Dice | method per seed | SupOnly per seed "
                "| difference | better/worse (seeds) | over test cases: difference | better/worse (cases) "
                "| Wilcoxon p (cases) |",
                "|---|---|---:|---:|---:|---|---|---:|:---:|---:|:---:|---:|",
            ]
            for e in board.entries:
                lines.append(
                    f"| {e.bundle} | {e.method_label} | {len(e.seeds)} | {_mean_sd(e.method_dice)} "
                    f"| {_mean_sd(e.baseline_dice)} | {', '.join(f'{v:.2f}' for v in e.method_dice)} "
                    f"| {', '.join(f'{v:.2f}' for v in e.baseline_dice)} | {e.by_seed.mean_difference:+.2f} "
                    f"| {e.by_seed.num_better}/{e.by_seed.num_worse} | {100 * e.by_case.mean_difference:+.2f} "
                    f"| {e.by_case.num_better}/{e.by_case.num_worse} | {e.by_case.p_value:.3g} |")
            lines += [""] + [f"- {e.bundle}: baseline *{e.baseline_label}*; seeds {', '.join(map(str, e.seeds))}; "
                             f"{_settings_text(e.settings)}; from {', '.join(f'`{s}`' for s in e.sources)}"
                             for e in board.entries]
        lines += [f"- Not on the board: {reason}" for reason in board.skipped]
    return "\n".join(lines) + "\n"


def write_figure(boards: Sequence[Board], path: Path) -> Path:
    """Dice per seed, each method next to its SupOnly (seeds joined), one panel per board."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state to leak

    widths = [max(2, len(b.entries)) for b in boards] or [2]
    figure = Figure(figsize=(2.6 * sum(widths) + 1.0, 5.8))
    axes = figure.subplots(1, len(widths), gridspec_kw={"width_ratios": widths}, squeeze=False)
    for board, ax in zip(boards, axes[0]):
        ax.set_title(board.title, fontsize=12, fontweight="bold")
        ax.set_ylabel("test Dice (%)")
        ax.grid(axis="y", alpha=0.3)
        if not board.entries:
            ax.text(0.5, 0.5, "no committed records", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        ticks, labels = [], []
        for i, e in enumerate(board.entries):
            x_base, x_method = 3 * i, 3 * i + 1
            colour = f"C{i}"
            for b, m in zip(e.baseline_dice, e.method_dice):
                ax.plot([x_base, x_method], [b, m], color="0.75", linewidth=1, zorder=1)
            ax.scatter([x_base] * len(e.seeds), e.baseline_dice, color="0.45", s=28, zorder=2)
            ax.scatter([x_method] * len(e.seeds), e.method_dice, color=colour, s=28, zorder=2)
            for x, values, c in ((x_base, e.baseline_dice, "0.2"), (x_method, e.method_dice, colour)):
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                ax.errorbar(x + 0.22, statistics.mean(values), yerr=sd, fmt="D", color=c, markersize=6, capsize=4,
                            zorder=3)
            top = max(*e.baseline_dice, *e.method_dice)
            ax.annotate(f"{e.by_seed.mean_difference:+.1f} ({e.by_seed.num_better}/{e.by_seed.num_worse} seeds)\n"
                        f"cases p={e.by_case.p_value:.2g}", (x_base + 0.5, top), xytext=(0, 8),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8.5)
            ticks += [x_base, x_method]
            labels += ["SupOnly", "\n".join(textwrap.wrap(e.method_label, 14))]
            # the bundle names the pair, under both tick labels (a tick label of its own would collide)
            ax.text(x_base + 0.5, -0.15, e.bundle, transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=9, style="italic")
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, fontsize=8.5)
        ax.set_xlim(-0.7, 3 * len(board.entries) - 0.8)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.12 * (high - low))  # room for the annotations
    figure.suptitle("Each method next to its own SupOnly: dots = seeds (joined per seed), diamond = mean ± sd\n"
                    "above a pair: method − SupOnly (seeds better/worse), Wilcoxon p over test cases", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    return path


def write_leaderboard(bundles_dir: str | Path, out: str | Path) -> tuple[Path, Path, list[Board]]:
    """Collect the boards, write ``leaderboard.md`` and ``leaderboard.png`` to ``out``; return both and the boards."""
    boards = collect_boards(bundles_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / MARKDOWN_FILE
    markdown.write_text(render_markdown(boards))
    return markdown, write_figure(boards, out / FIGURE_FILE), boards
