"""samssl.experiments.leaderboard: every method against its own SupOnly, per data set, from records alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from samssl.experiments.cli import leaderboard_main
from samssl.experiments.leaderboard import (
    FIGURE_FILE,
    MARKDOWN_FILE,
    LeaderboardError,
    collect_boards,
    render_markdown,
    write_leaderboard,
)
from samssl.experiments.records import results_document

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"data": "../shared/data/toy", "pool": 6, "test": 2, "preset": "cpu", "overrides": []}


def _bundle(bundles: Path, name: str, dataset: str = "Toy", num_labelled: int = 4) -> Path:
    bundle = bundles / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "variants.json").write_text(json.dumps({
        "dataset": dataset, "data": "msd", "num_labelled": num_labelled, "method": "new", "baseline": "base",
        "variants": {"base": {"label": "SupOnly"}, "new": {"label": "Method"}, "other": {"label": "Other"}}}))
    (bundle / "docs" / "results").mkdir(parents=True)
    return bundle


def _record(bundle: Path, file: str, dice: dict[str, dict[int, list[float]]], num_labelled: int | None = 4) -> Path:
    known = {name: {seed: [{"id": f"case{i}", "dice": v} for i, v in enumerate(values)]
                    for seed, values in by_seed.items()} for name, by_seed in dice.items()}
    seeds = sorted({s for by_seed in dice.values() for s in by_seed})
    settings = {"bundle": bundle.name, **SETTINGS, "num_labelled": num_labelled} if num_labelled else None
    document = results_document(bundle.name, "new", "base", seeds, settings or {}, {"base": "SupOnly", "new": "Method"},
                                known)
    if settings is None:
        del document["settings"]  # a record made before settings were recorded: its file name says the count
    path = bundle / "docs" / "results" / file
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    bundles = tmp_path / "bundles"
    a = _bundle(bundles, "a")
    _record(a, "seed0_4_labelled.json", {"base": {0: [0.5, 0.7]}, "new": {0: [0.6, 0.8]}})
    _record(a, "seed1_4_labelled.json", {"base": {1: [0.6, 0.6]}, "new": {1: [0.6, 0.7]}})
    (a / "docs" / "results" / "seed0_4_labelled_pseudo_labels.json").write_text(json.dumps({"cases": []}))
    _bundle(bundles, "b")  # declared on the board, nothing committed
    c = _bundle(bundles, "c")
    _record(c, "cpu_1_labelled.json", {"base": {0: [0.1]}, "new": {0: [0.2]}}, num_labelled=1)  # another count
    d = _bundle(bundles, "d", dataset="Other", num_labelled=8)
    _record(d, "cpu_8_labelled.json", {"base": {0: [0.4], 1: [0.5]}, "new": {0: [0.5], 1: [0.4]}}, num_labelled=None)
    return tmp_path


def test_each_method_is_put_against_its_own_suponly_with_the_harness_numbers(project):
    boards = collect_boards(project / "bundles")
    assert [b.title for b in boards] == ["Other, 8 labelled", "Toy, 4 labelled"]
    toy = boards[1]
    (entry,) = toy.entries
    assert entry.bundle == "a" and entry.seeds == (0, 1)  # the two records joined
    assert entry.method_dice == pytest.approx((70.0, 65.0)) and entry.baseline_dice == pytest.approx((60.0, 60.0))
    assert entry.by_seed.mean_difference == pytest.approx(7.5)
    assert (entry.by_seed.num_better, entry.by_seed.num_worse) == (2, 0)
    assert entry.by_case.mean_difference == pytest.approx(0.075) and entry.by_case.num_pairs == 2
    assert toy.skipped == ["b: no committed comparison record at 4 labelled in bundles/b/docs/results.",
                           "c: no committed comparison record at 4 labelled in bundles/c/docs/results."]
    markdown = render_markdown(boards)
    # mean ± sd, per seed (method, SupOnly), difference over seeds, then over test cases (2 pairs: p = 0.5)
    assert ("| a | Method | 2 | 67.50 ± 3.54 | 60.00 ± 0.00 | 70.00, 65.00 | 60.00, 60.00 | +7.50 | 2/0 "
            "| +7.50 | 2/0 | 0.5 |") in markdown
    assert "| d | Method | 2 | 45.00 ± 7.07 | 45.00 ± 7.07 | 50.00, 40.00 | 40.00, 50.00 | +0.00 | 1/1 |" in markdown
    assert ("- d: baseline *SupOnly*; seeds 0, 1; settings not recorded; "
            "from `bundles/d/docs/results/cpu_8_labelled.json`") in markdown
    assert "- Not on the board: b: no committed comparison record at 4 labelled" in markdown


def test_the_leaderboard_writes_markdown_and_a_readable_figure(project, capsys):
    leaderboard_main(["--bundles", str(project / "bundles")])
    out = project / "docs" / "leaderboard"  # default: next to the bundles folder
    assert (out / MARKDOWN_FILE).read_text() == render_markdown(collect_boards(project / "bundles"))
    with Image.open(out / FIGURE_FILE) as figure:
        assert figure.format == "PNG" and figure.width > figure.height > 400
    printed = capsys.readouterr().out
    assert "Toy, 4 labelled: a" in printed and "skipped b: no committed comparison record" in printed


def test_records_of_one_bundle_that_disagree_are_refused_not_mixed(project):
    a = project / "bundles" / "a"
    _record(a, "seed0_again_4_labelled.json", {"base": {0: [0.5, 0.9]}, "new": {0: [0.6, 0.8]}})
    with pytest.raises(LeaderboardError, match="a: base seed 0 differs between the records"):
        collect_boards(project / "bundles")
    with pytest.raises(SystemExit, match="samssl-leaderboard: a: base seed 0 differs"):
        leaderboard_main(["--bundles", str(project / "bundles"), "--out", str(project / "out")])


def test_a_missing_bundles_folder_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="no bundles folder at .*pass --bundles"):
        leaderboard_main(["--bundles", str(tmp_path / "nowhere")])


def test_the_real_records_give_the_bundles_reported_gains(tmp_path):
    markdown, figure, boards = write_leaderboard(ROOT / "bundles", tmp_path)
    by_title = {b.title: b for b in boards}
    assert set(by_title) == {"Dermoscopy, 8 labelled", "LA MRI, 4 labelled"}
    gains = {e.bundle: (round(e.by_seed.mean_difference, 2), e.by_seed.num_better, e.by_seed.num_worse, len(e.seeds))
             for b in boards for e in b.entries}
    # the figures of each bundle's docs/README.md
    assert gains == {"samkd_dualtask_skin": (9.38, 5, 0, 5), "uamt_skin": (5.73, 3, 2, 5),
                     "semisam_la": (0.71, 2, 1, 3), "sfr_la": (3.68, 3, 0, 3), "ssl_medsam2": (5.41, 3, 0, 3)}
    assert by_title["LA MRI, 4 labelled"].skipped == []
    with Image.open(figure) as image:
        assert image.format == "PNG"
    # the committed leaderboard is what the committed records give
    assert (ROOT / "docs" / "leaderboard" / MARKDOWN_FILE).read_text() == markdown.read_text()
    assert (ROOT / "docs" / "leaderboard" / FIGURE_FILE).is_file()
