"""Command line.

``python -m ood_lib sweep --profile digits --S 200 400 600 --oe-lambda 0.5 1`` selects SD/OE
hyper-parameters on the validation splits (ID val vs digits 6-9 val) and writes
``results/<profile>/<out>.{csv,md}`` (``--out``, default validation_sweep).

``python -m ood_lib grid --profile digits --runs ce:none arcface:mixup --seeds 0 1 2`` trains
each loss with each outlier source (``loss:generator``; ``--full``: every pair the training
loop accepts, ``pipeline.grid_runs()``), scores every model with every applicable score and
writes, under ``results/<profile>/``, ``metrics<suffix>.csv`` (tidy), ``loss_grid<suffix>.{md,tex,csv}``
(loss × outlier source with the ``--score`` score) and ``scores_{near,far}<suffix>.{md,tex,csv}``
(model × score AUROC); the suffix is ``_full`` with ``--full`` (the files ``./run_all.sh --full``
writes), ``_cli`` otherwise, or ``--suffix``.

``python -m ood_lib check --profile my_data.toml`` checks a profile, its settings and its data
before any work (what ``./run_all.sh`` does first) and prints the profile's name.

``python -m ood_lib plan --profile cifar10_quick`` prints each stage's expected seconds on this
device (from ``benchmarks/profile_cost.py``'s figures); ``python -m ood_lib timings --profile X
--stage-log F`` writes a run's expected and actual stage seconds (``./run_all.sh`` does both).

``python -m ood_lib paper-tables --profile digits --full`` writes the papers' tables and
ablations (``ood_lib.ablations``, notebooks 08 and 09) under ``results/<profile>/``: without
``--full`` the subset the default run computes, with it the papers' grids (suffix ``_full``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import pandas as pd

from . import ablations, pipeline, report
from .config import PROFILES, override, profile_arg
from .config_files import get_profile


PROFILE_HELP = f"a built-in profile ({', '.join(sorted(PROFILES))}) or a .toml config file"


def _profile_arg(value: str) -> str:
    if value.endswith(".toml") or value in PROFILES:
        return value
    raise argparse.ArgumentTypeError(f"unknown profile {value!r}; {PROFILE_HELP}")


def _show_cache_events() -> None:
    """The CLI prints each cache event (``ood_lib.artifacts``' logger) as a line, as it happens."""
    log = logging.getLogger("ood_lib")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv=None) -> None:
    from .artifacts import process_role

    if not process_role()[0]:   # launched as several processes (torchrun, accelerate launch): the main one prints
        sys.stdout = open(os.devnull, "w")
    _show_cache_events()
    parser = argparse.ArgumentParser(prog="python -m ood_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a profile and its data before any work; prints the profile's name")
    check.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    sweep = sub.add_parser("sweep", help="validation sweep over SD timestep S, guidance w and OE weight")
    sweep.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    sweep.add_argument("--S", type=int, nargs="+", default=[200, 400, 600])
    sweep.add_argument("--w", type=float, nargs="+", default=None)
    sweep.add_argument("--stride", type=int, default=None, help="SD's DDIM stride (default: the profile's)")
    sweep.add_argument("--screen", action="store_true",
                       help="screen every S x w with the regime check first (pipeline.sd_regime_screen) and train only "
                            "pipeline.sd_candidates: per w, the smallest S outside the copy regime")
    sweep.add_argument("--oe-lambda", type=float, nargs="+", default=None)
    sweep.add_argument("--width", type=int, nargs="+", default=None,
                       help="classifier widths (small_cnn) to compare on validation (default: the profile's)")
    sweep.add_argument("--epochs", type=int, nargs="+", default=None,
                       help="classifier epochs to compare on validation (default: the profile's)")
    sweep.add_argument("--losses", nargs="+", default=["ce", "oe"],
                       help="losses trained at each setting (each with its default outlier source)")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0])
    sweep.add_argument("--out", default="validation_sweep", help="file stem under results/<profile>/")
    grid = sub.add_parser("grid", help="train and evaluate loss:outlier-source pairs on the test splits")
    grid.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    which = grid.add_mutually_exclusive_group(required=True)
    which.add_argument("--runs", nargs="+", help="loss:generator pairs, e.g. ce:none oe:sd arcface:mixup")
    which.add_argument("--full", action="store_true", help="every loss with every outlier source it accepts")
    which.add_argument("--default", action="store_true",
                       help="the default run's models (pipeline.DEFAULT_RUNS: the eight pairs notebook 06 trains)")
    grid.add_argument("--score", default="knn", help="the score of the loss × outlier-source table (default knn)")
    grid.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's seeds")
    grid.add_argument("--suffix", default=None,
                      help="file-name suffix under results/<profile>/ (default: '_full' with --full, '_cli' otherwise)")
    dod = sub.add_parser("dod-alpha", help="validation choice of DOD's voting weight alpha")
    dod.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    dod.add_argument("--runs", nargs="+", default=["sd_three_head:sd", "oe:sd"], help="loss:generator pairs")
    dod.add_argument("--alpha", type=float, nargs="+", default=None,
                     help="weights to compare (default: 0 and pipeline.dod_alpha_candidates, multiples of the "
                          "distance term's ID spread / k)")
    dod.add_argument("--seeds", type=int, nargs="+", default=[0])
    papers = sub.add_parser("paper-tables", help="the papers' tables and ablations (notebooks 08 and 09)")
    papers.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    papers.add_argument("--full", action="store_true", help="the papers' full grids over the profile's seeds")
    plan = sub.add_parser("plan", help="each stage's expected seconds on this device (benchmarks/profile_cost.py)")
    plan.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    timings = sub.add_parser("timings", help="a run's expected and actual stage seconds -> results/<profile>/timings")
    timings.add_argument("--profile", default="digits", type=_profile_arg, help=PROFILE_HELP)
    timings.add_argument("--stage-log", required=True, help="the file $OOD_STAGE_LOG named during the run")
    timings.add_argument("--title", default="", help="what ran (command, data, hardware), for the table's title")
    mark = sub.add_parser("mark", help="add the collapse marks to a saved grid's tables (from its metrics*.csv)")
    mark.add_argument("metrics", help="a grid's tidy metrics<suffix>.csv; its tables beside it are rewritten")
    mark.add_argument("--score", default="knn", help="the score of the loss x outlier-source table")
    args = parser.parse_args(argv)
    if args.command == "check":
        return run_check(args)
    if args.command == "mark":
        return run_mark(args)
    if args.command in ("plan", "timings"):
        return run_timings(args)
    if args.command == "paper-tables":
        return run_paper_tables(args)
    if args.command == "grid":
        return run_grid(args)
    if args.command == "dod-alpha":
        return run_dod_alpha(args)

    profile = get_profile(args.profile)
    stride = {"stride": args.stride} if args.stride else {}
    sizes = [{**({"width": width} if args.width else {}), **({"epochs": epochs} if args.epochs else {})}
             for width in (args.width or [None]) for epochs in (args.epochs or [None])]
    grid = [{"sd": {"S": S, "w": w, **stride}, "clf": {"oe_lambda": lam, **size}}
            for S in args.S for w in (args.w or [profile.sd.w]) for lam in (args.oe_lambda or [profile.clf.oe_lambda])
            for size in sizes]
    out = report.results_dir(profile.name)
    screen_md = ""
    if args.screen:
        screened = override(profile, sd=stride) if stride else profile
        screen = pipeline.sd_regime_screen(screened, args.S, args.w or [profile.sd.w])
        report.write_table(screen.set_index(["S", "w"]).round(3), out, f"{args.out}_screen",
                           "SD regime screen on 120 ID training images per setting (pipeline.sd_regime_screen), CE "
                           f"judge seed 0, profile `{profile.name}`: the sweep trains only pipeline.sd_candidates.")
        grid = [{"sd": {**c["sd"], **stride}} for c in pipeline.sd_candidates(screen)]
        screen_md = (f"Screened first (`{args.out}_screen.md`): S x w = {list(args.S)} x {args.w or [profile.sd.w]}; "
                     f"trained: the smallest S outside the copy regime for each w.\n\n")
        print(screen.round(3).to_string())
    df = pipeline.validation_sweep(profile, grid, losses=tuple(args.losses), seeds=args.seeds)
    df.to_csv(out / f"{args.out}.csv", index=False, float_format="%.6f")
    table = report.sweep_table(df)
    (out / f"{args.out}.md").write_text(
        f"Validation sweep, profile `{profile.name}`: near-OOD AUROC (%) on ID val vs digits 6-9 val "
        f"(mean over seeds {args.seeds}).\n\nCommand: `python -m ood_lib sweep --profile {profile_arg(profile)} "
        f"--S {' '.join(map(str, args.S))}" + (f" --w {' '.join(map(str, args.w))}" if args.w else "")
        + (f" --stride {args.stride}" if args.stride else "") + (" --screen" if args.screen else "")
        + (f" --oe-lambda {' '.join(map(str, args.oe_lambda))}" if args.oe_lambda else "")
        + (f" --width {' '.join(map(str, args.width))}" if args.width else "")
        + (f" --epochs {' '.join(map(str, args.epochs))}" if args.epochs else "")
        + (f" --losses {' '.join(args.losses)}" if args.losses != ["ce", "oe"] else "")
        + f" --seeds {' '.join(map(str, args.seeds))} --out {args.out}`\n\n{screen_md}{table.to_markdown(index=False)}\n"
        + _sd_choice(df))
    print(table.to_string())


def _sd_choice(df) -> str:
    """The sweep's SD choice by :func:`ood_lib.pipeline.choose_sd_setting` (when it trained the
    three-head model), as a Markdown paragraph."""
    if "sd_three_head" not in set(df.loss):
        return ""
    choice = pipeline.choose_sd_setting(df)
    return (f"\nChosen by `pipeline.choose_sd_setting` (highest validation near-OOD AUROC of the three-head model's "
            f"DOD distance score outside the copy regime; ties within 0.1 to the smaller S, then w): "
            f"`{choice['setting']}` ({100 * choice['auroc']:.2f}). Copy regime (excluded): "
            f"{', '.join(f'`{s}`' for s in choice['excluded']) or 'none'}.\n")


def run_dod_alpha(args) -> None:
    profile = get_profile(args.profile)
    runs = [tuple(spec.partition(":")[::2]) for spec in args.runs]
    alphas = args.alpha or [0.0, *pipeline.dod_alpha_candidates(profile, runs[0], args.seeds[0])]
    table = pipeline.dod_alpha_sweep(profile, runs, alphas, seeds=args.seeds)
    chosen = pipeline.choose_dod_alpha(table)
    command = (f"python -m ood_lib dod-alpha --profile {profile_arg(profile)} --runs {' '.join(args.runs)} "
               + (f"--alpha {' '.join(map(str, args.alpha))} " if args.alpha else "")
               + f"--seeds {' '.join(map(str, args.seeds))}")
    report.write_table(table, report.results_dir(profile.name), "dod_alpha_val",
                       f"DOD voting weight alpha on the validation splits (ID val vs near-OOD val), profile "
                       f"`{profile.name}`: near-OOD AUROC (%), mean over seeds {args.seeds}; alpha = 0 is the distance "
                       f"score alone; the nonzero weights are multiples {list(pipeline.DOD_ALPHA_MULTIPLIERS)} of the "
                       f"distance term's ID-validation std / k unless given. Chosen by `pipeline.choose_dod_alpha` "
                       f"(best nonzero alpha for the first run, ties within 0.1 to the smaller): alpha = {chosen:g}. "
                       f"Command: `{command}`")
    print(table.to_string())
    print(f"chosen alpha = {chosen:g}")


def run_check(args) -> None:
    """Exit 2 with the problem and its fix when the profile, its settings or its data are
    wrong (``./run_all.sh`` calls this before it runs or writes anything)."""
    import sys

    from .data import check_data, verify_images

    try:
        profile = get_profile(args.profile)
        check_data(profile.data)
        verify_images(profile.data)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        sys.exit(2)
    print(profile.name)


def run_paper_tables(args) -> None:
    cfg = ablations.settings(get_profile(args.profile), args.full)
    profile, suffix, out = cfg["profile"], cfg["suffix"], report.results_dir(get_profile(args.profile).name)
    command = f"python -m ood_lib paper-tables --profile {args.profile}" + (" --full" if args.full else "")
    tables = {**ablations.write_sd_tables(profile, out, suffix, cfg["S"], cfg["w"], command),
              **ablations.write_oal_tables(profile, out, suffix, cfg["oal_variants"], command),
              **ablations.write_paper1(profile, out, suffix, cfg["metric_losses"], command),
              **ablations.write_sd_as_test(profile, cfg["test_runs"], out, suffix, command)}
    tables["claims"] = ablations.write_claims(tables, profile, out, suffix, command)
    for name, table in tables.items():
        if name not in ablations.evidence(tables):
            print(f"== {name}\n{table.to_string()}\n")


def run_timings(args) -> None:
    """``plan``: print the plan; ``timings``: write expected vs actual stage seconds."""
    from . import timings

    name = get_profile(args.profile).name
    if args.command == "plan":
        print(timings.plan(name))
        return
    table = timings.timings_table(args.stage_log, name)
    report.write_table(table, report.results_dir(name), "timings",
                       f"Stage seconds of profile `{name}` on {timings.device_kind()}: expected (the plan, "
                       f"results/benchmarks/{timings.cost_path(name).name}; training and generation only) and actual "
                       f"(stages computed in this run, each without the stages computed inside it; cached ones "
                       f"cost nothing). {args.title}")
    print(table.to_string())


def run_mark(args) -> None:
    """Rewrite ``loss_grid<suffix>`` and ``scores_{near,far}<suffix>`` beside a saved grid's
    ``metrics<suffix>.csv`` with the ``marks`` column (collapsed models, read against the grid's
    own CE rows); the numbers are the saved run's, and each title keeps that run's command."""
    from pathlib import Path

    from .evaluation import mark_collapse

    path = Path(args.metrics)
    suffix = path.stem.removeprefix("metrics")
    df = mark_collapse(pd.read_csv(path))
    mark = f"Marks added by `python -m ood_lib mark {path.as_posix()}` (ID accuracy more than 3 points below CE's of the same seed)."
    for stem, table in ((f"loss_grid{suffix}", report.loss_grid_table(df, args.score)),
                        *((f"scores_{g}{suffix}", report.score_table(df, g)) for g in ("near", "far"))):
        old = path.parent / f"{stem}.md"
        title = old.read_text().split("\n")[0] if old.exists() else f"Tables of `{path.name}`."
        report.write_table(table, path.parent, stem, f"{title.split(' Marks added by')[0]} {mark}")
        print(f"== {stem}\n{table.to_string()}\n")


def run_grid(args) -> None:
    runs = (pipeline.grid_runs() if args.full else list(pipeline.DEFAULT_RUNS) if args.default
            else [tuple(spec.partition(":")[::2]) for spec in args.runs])
    runs = [(loss, generator or None) for loss, generator in runs]
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = override(profile, seeds=tuple(args.seeds))
    df = pipeline.evaluate(profile, runs)
    suffix = args.suffix if args.suffix is not None else ("_full" if args.full else "_cli")
    command = (f"python -m ood_lib grid --profile {profile_arg(profile)} "
               + ("--full" if args.full else "--default" if args.default else f"--runs {' '.join(args.runs)}")
               + f" --seeds {' '.join(map(str, profile.seeds))} --score {args.score} --suffix '{suffix}'")
    out = report.results_dir(profile.name)
    report.write_score_tables(df, out, suffix, f"Profile `{profile.name}`, `{command}`")
    print(report.write_grid(df, out, f"loss_grid{suffix}", args.score, command).to_string())


if __name__ == "__main__":
    main()
