r"""Command lines of the harness: ``samssl-compare BUNDLE ...`` and ``samssl-leaderboard``.

``samssl-compare`` trains a bundle's variants (declared in its ``configs/variants.json``) on the
same splits over several seeds, tests each final model once on a held-out set and reports per-seed
means, mean ± sd over seeds and paired Wilcoxon tests of the method against every other variant,
over seeds and over test cases (``<out>/results.md``, every per-case value in ``<out>/results.json``).
BUNDLE is a bundle name under ``./bundles`` or a path to a bundle folder; everything after it is
that bundle's command line (``samssl-compare uamt_skin --help``). Finished runs are reused and a
killed run resumes, so re-running a command completes a comparison; ``--earlier_results`` joins the
``results.json`` of earlier pieces (checked to be the same comparison).

``samssl-leaderboard`` puts every method against its own SupOnly, one table per data set, from the
committed records alone (:mod:`samssl.experiments.leaderboard`).

``python -m samssl.experiments compare BUNDLE ...`` and ``python -m samssl.experiments leaderboard``
are the same commands; ``python -m samssl.experiments traces LABEL=RUN ...`` tabulates runs'
per-iteration traces over phases of training (:mod:`samssl.experiments.traces`).

Examples::

    OMP_NUM_THREADS=1 samssl-compare uamt_skin --train_dir ../shared/data/dermoscopy/ph2 \
        --test_dir ../shared/data/dermoscopy/isic2017 --num_labelled 8 --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 samssl-compare semisam_la --data ../shared/data/la --num_labelled 4
    samssl-leaderboard
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from samssl.experiments.records import Records, load_earlier_results, results_document
from samssl.experiments.report import comparison_report
from samssl.experiments.runner import (
    check_comparison_folder,
    check_models_from,
    comparison_settings,
    data_arguments,
    recorded_cases,
    run_experiment,
)
from samssl.experiments.variants import BundleExperiment, VariantsError, bundle_names, load_variants

__all__ = ["DEFAULT_SEEDS", "compare", "compare_main", "leaderboard_main", "main", "parser_for"]

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def parser_for(spec: BundleExperiment) -> argparse.ArgumentParser:
    """The options of ``samssl-compare <bundle>``: the data options follow the bundle's data kind."""
    description = textwrap.fill(spec.description or f"Compare the variants of {spec.bundle} over seeds.", 100)
    parser = argparse.ArgumentParser(prog=f"samssl-compare {spec.bundle}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if spec.data == "dermoscopy":
        parser.add_argument("--train_dir", help="ISIC/PH2-style train pool")
        parser.add_argument("--test_dir", help="labelled ISIC/PH2-style test folder (optional with --folds)")
        parser.add_argument("--folds", type=int, default=None,
                            help="cut --train_dir into K folds (written under --out/folds): seed s trains on all but "
                                 "fold s mod K and is tested on that fold, or on --test_dir if given")
    else:
        parser.add_argument("--data", default=str(spec.project_root.parent / "shared" / "data" / "la"),
                            help="MSD-style 3D folder")
        parser.add_argument("--pool", type=int, default=60, help="first N cases (by id) form the training pool")
        parser.add_argument("--test", type=int, default=20, help="last N cases (by id) form the test set")
    parser.add_argument("--num_labelled", type=int, default=spec.num_labelled)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help="each seed draws the labelled cases and initialises the run (default 0-4)")
    parser.add_argument("--variants", nargs="+", default=list(spec.default_variants), choices=list(spec.variants))
    parser.add_argument("--method", default=spec.method, choices=list(spec.variants),
                        help=f"the variant the paired tests put against every other one (default: the bundle's "
                             f"method, {spec.method}); the records keep the bundle's method")
    parser.add_argument("--preset", default="cpu",
                        help="config preset in configs/ merged after train.json ('' for none)")
    parser.add_argument("--out", default=str(spec.bundle_dir / "runs" / "experiments"),
                        help="where runs and the report go")
    if spec.sam_cache_key:
        parser.add_argument("--sam_cache_dir", default=None,
                            help="SAM embedding cache folder (default: the bundle's, i.e. $SAMSSL_CACHE_DIR or "
                                 "~/.cache/samssl/embeddings, shared by every run and bundle)")
    parser.add_argument("--models_from", default=None,
                        help="a comparison folder with the same training settings: test its runs' model.pt on this "
                             "comparison's test set instead of training (the same models scored on another folder)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a run's metrics exist")
    parser.add_argument("--save_predictions", action="store_true",
                        help="also write each run's test-set masks in the test folder's own layout "
                             "(<run>/test_predictions/masks: PNG in ISIC naming, NIfTI with the input affine)")
    parser.add_argument("--keep_checkpoints", action="store_true",
                        help="keep the training checkpoints of finished runs (default: removed, model.pt stays)")
    parser.add_argument("--earlier_results", nargs="+", default=None,
                        help="results.json files of earlier runs of this comparison (same settings, checked): "
                             "their runs are reused, so a comparison can be finished a seed or a variant at a time")
    parser.add_argument("--report_only", action="store_true",
                        help="tabulate the finished runs without training (every variant x seed must exist)")
    parser.add_argument("overrides", nargs="*", help="extra --key value pairs passed to every run (after --)")
    return parser


def compare(spec: BundleExperiment, argv: Sequence[str], command: str = "") -> str:
    """Run (or resume, or only tabulate) the comparison ``argv`` asks for; write and return the report."""
    args = parser_for(spec).parse_args(list(argv))
    out = Path(args.out).resolve()
    if spec.data == "dermoscopy" and (not args.train_dir or not (args.test_dir or args.folds)):
        raise SystemExit(f"{spec.bundle}: give --train_dir (ISIC/PH2-style pool) and --test_dir "
                         "(labelled test folder), or --folds K to test on held-out folds of the pool.")
    if spec.data == "dermoscopy" and args.folds is not None and args.folds < 2:
        raise SystemExit(f"--folds must be at least 2, got {args.folds}.")
    settings = comparison_settings(spec, args)
    if args.models_from and not args.report_only:  # a reprint reads the records alone: the models may be long gone
        check_models_from(Path(args.models_from), settings, spec.project_root)
    check_comparison_folder(out, settings, spec.project_root, record=not args.report_only)
    data_args, split = data_arguments(spec, args, out)

    def run_args(seed: int) -> list[str]:
        return [*data_args(seed), *args.overrides]
    earlier = (load_earlier_results(args.earlier_results, settings, spec.project_root)
               if args.earlier_results else None)
    if args.report_only:
        found = {name: {s: recorded_cases(out, name, s, earlier) for s in args.seeds} for name in args.variants}
        missing = [f"{name} seed {s}" for name, by_seed in found.items()
                   for s, cases in by_seed.items() if cases is None]
        if missing:
            raise SystemExit(f"--report_only: no finished run for {', '.join(missing)} in {out}; train them first.")
        results: Records = found  # type: ignore[assignment]
        seconds: dict[str, float] = {}
    else:
        results, seconds = run_experiment(spec, args.variants, args.seeds, out, run_args, args.preset, args.retrain,
                                          earlier, args.keep_checkpoints, args.save_predictions,
                                          Path(args.models_from).resolve() if args.models_from else None)
    report = comparison_report(dataclasses.replace(spec, method=args.method), results, args.variants, args.seeds)
    if args.models_from:
        split += f" Models: those of the comparison in {settings['models_from']} (not trained here)."
    report += f"\n{split}\n" + (f"{spec.notes}\n" if spec.notes else "")
    if seconds:
        report += f"\nwall-clock per run ({'test' if args.models_from else 'train + test'}):\n"
        report += "".join(f"- {k}: {v / 60:.1f} min\n" for k, v in seconds.items())
    report += f"\ncommand: {command or 'samssl-compare ' + shlex.join([spec.bundle, *argv])}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report)
    # every record this comparison knows, not only the report's: the file joins the pieces of a
    # comparison finished a seed at a time, and is what the next piece's --earlier_results reads
    known: Records = {n: dict(by_seed) for n, by_seed in (earlier or {}).items()}
    for name in args.variants:
        known.setdefault(name, {}).update({s: results[name][s] for s in args.seeds})
    labels = {n: v.label for n, v in spec.variants.items()}
    document = results_document(spec.bundle, spec.method, spec.baseline, args.seeds, settings, labels, known)
    (out / "results.json").write_text(json.dumps(document, indent=1))
    print("\n" + report)
    return report


def _usage() -> str:
    here = bundle_names("bundles")
    return ("usage: samssl-compare BUNDLE [options] [-- --key value ...]\n\n"
            "BUNDLE: a bundle name under ./bundles"
            + (f" ({', '.join(here)})" if here else " (none here)")
            + " or a path to a bundle folder with configs/variants.json.\n"
              "`samssl-compare BUNDLE --help` lists that bundle's options.")


def compare_main(argv: Sequence[str] | None = None) -> None:
    """``samssl-compare BUNDLE ...``: the report goes to ``--out`` (``results.md``, ``results.json``) and stdout."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage() + "\n\n" + (__doc__ or ""))
        if not argv:
            raise SystemExit(2)
        return
    try:
        spec = load_variants(argv[0])
    except VariantsError as error:
        raise SystemExit(f"samssl-compare: {error}") from None
    compare(spec, argv[1:], "samssl-compare " + shlex.join(argv))


def leaderboard_main(argv: Sequence[str] | None = None) -> None:
    """``samssl-leaderboard``: write the leaderboard's Markdown and figure from the committed records."""
    from samssl.experiments.leaderboard import LeaderboardError, write_leaderboard

    parser = argparse.ArgumentParser(
        prog="samssl-leaderboard", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every method against its own SupOnly, one table and one figure panel per data set, from the "
                    "committed per-case records (bundles/*/docs/results/*.json) alone: nothing is trained.")
    parser.add_argument("--bundles", default="bundles", help="folder of the bundles (default: ./bundles)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: docs/leaderboard next to the bundles folder)")
    args = parser.parse_args(None if argv is None else list(argv))
    if not Path(args.bundles).is_dir():
        raise SystemExit(f"samssl-leaderboard: no bundles folder at {Path(args.bundles).resolve()} "
                         "(run it from the repository root or pass --bundles).")
    out = Path(args.out) if args.out else Path(args.bundles).resolve().parent / "docs" / "leaderboard"
    try:
        markdown, figure, boards = write_leaderboard(args.bundles, out)
    except (LeaderboardError, VariantsError) as error:
        raise SystemExit(f"samssl-leaderboard: {error}") from None
    for board in boards:
        print(f"{board.title}: {', '.join(e.bundle for e in board.entries) or 'no entries'}")
        for reason in board.skipped:
            print(f"  skipped {reason}")
    print(f"wrote {markdown} and {figure}")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m samssl.experiments {compare BUNDLE ...|leaderboard ...|traces RUN ...}``."""
    from samssl.experiments.traces import traces_main

    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = {"compare": compare_main, "leaderboard": leaderboard_main, "traces": traces_main}
    if not argv or argv[0] not in verbs:
        usage = "usage: python -m samssl.experiments {compare BUNDLE ...|leaderboard ...|traces RUN ...}"
        raise SystemExit(f"{usage}\n\n{__doc__ or ''}")
    verbs[argv[0]](argv[1:])
