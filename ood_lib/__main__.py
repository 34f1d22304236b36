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

``python -m ood_lib paper-tables --profile digits --full`` writes the papers' tables and
ablations (``ood_lib.ablations``, notebooks 08 and 09) under ``results/<profile>/``: without
``--full`` the subset the default run computes, with it the papers' grids (suffix ``_full``).
"""
from __future__ import annotations

import argparse

from . import ablations, pipeline, report
from .config import PROFILES, get_profile, override


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ood_lib")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="validation sweep over SD timestep S, guidance w and OE weight")
    sweep.add_argument("--profile", default="digits", choices=sorted(PROFILES))
    sweep.add_argument("--S", type=int, nargs="+", default=[200, 400, 600])
    sweep.add_argument("--w", type=float, nargs="+", default=None)
    sweep.add_argument("--oe-lambda", type=float, nargs="+", default=None)
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0])
    sweep.add_argument("--out", default="validation_sweep", help="file stem under results/<profile>/")
    grid = sub.add_parser("grid", help="train and evaluate loss:outlier-source pairs on the test splits")
    grid.add_argument("--profile", default="digits", choices=sorted(PROFILES))
    which = grid.add_mutually_exclusive_group(required=True)
    which.add_argument("--runs", nargs="+", help="loss:generator pairs, e.g. ce:none oe:sd arcface:mixup")
    which.add_argument("--full", action="store_true", help="every loss with every outlier source it accepts")
    grid.add_argument("--score", default="knn", help="the score of the loss × outlier-source table (default knn)")
    grid.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's seeds")
    grid.add_argument("--suffix", default=None,
                      help="file-name suffix under results/<profile>/ (default: '_full' with --full, '_cli' otherwise)")
    dod = sub.add_parser("dod-alpha", help="validation choice of DOD's voting weight alpha")
    dod.add_argument("--profile", default="digits", choices=sorted(PROFILES))
    dod.add_argument("--runs", nargs="+", default=["sd_three_head:sd", "oe:sd"], help="loss:generator pairs")
    dod.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.3, 1.0, 3.0])
    dod.add_argument("--seeds", type=int, nargs="+", default=[0])
    papers = sub.add_parser("paper-tables", help="the papers' tables and ablations (notebooks 08 and 09)")
    papers.add_argument("--profile", default="digits", choices=sorted(PROFILES))
    papers.add_argument("--full", action="store_true", help="the papers' full grids over the profile's seeds")
    args = parser.parse_args(argv)
    if args.command == "paper-tables":
        return run_paper_tables(args)
    if args.command == "grid":
        return run_grid(args)
    if args.command == "dod-alpha":
        return run_dod_alpha(args)

    profile = get_profile(args.profile)
    grid = [{"sd": {"S": S, "w": w}, "clf": {"oe_lambda": lam}}
            for S in args.S for w in (args.w or [profile.sd.w]) for lam in (args.oe_lambda or [profile.clf.oe_lambda])]
    df = pipeline.validation_sweep(profile, grid, seeds=args.seeds)
    out = report.results_dir(profile.name)
    df.to_csv(out / f"{args.out}.csv", index=False, float_format="%.6f")
    table = report.sweep_table(df)
    (out / f"{args.out}.md").write_text(
        f"Validation sweep, profile `{profile.name}`: near-OOD AUROC (%) on ID val vs digits 6-9 val "
        f"(mean over seeds {args.seeds}).\n\nCommand: `python -m ood_lib sweep --profile {profile.name} "
        f"--S {' '.join(map(str, args.S))}" + (f" --w {' '.join(map(str, args.w))}" if args.w else "")
        + (f" --oe-lambda {' '.join(map(str, args.oe_lambda))}" if args.oe_lambda else "")
        + f" --seeds {' '.join(map(str, args.seeds))} --out {args.out}`\n\n{table.to_markdown(index=False)}\n")
    print(table.to_string())


def run_dod_alpha(args) -> None:
    profile = get_profile(args.profile)
    runs = [tuple(spec.partition(":")[::2]) for spec in args.runs]
    table = pipeline.dod_alpha_sweep(profile, runs, args.alpha, seeds=args.seeds)
    command = (f"python -m ood_lib dod-alpha --profile {profile.name} --runs {' '.join(args.runs)} "
               f"--alpha {' '.join(map(str, args.alpha))} --seeds {' '.join(map(str, args.seeds))}")
    report.write_table(table, report.results_dir(profile.name), "dod_alpha_val",
                       f"DOD voting weight alpha on the validation splits (ID val vs near-OOD val), profile "
                       f"`{profile.name}`: near-OOD AUROC (%), mean over seeds {args.seeds}; alpha = 0 is the distance "
                       f"score alone. Command: `{command}`")
    print(table.to_string())


def run_paper_tables(args) -> None:
    cfg = ablations.settings(get_profile(args.profile), args.full)
    profile, suffix, out = cfg["profile"], cfg["suffix"], report.results_dir(args.profile)
    command = f"python -m ood_lib paper-tables --profile {args.profile}" + (" --full" if args.full else "")
    tables = {**ablations.write_sd_tables(profile, out, suffix, cfg["S"], cfg["w"], command),
              **ablations.write_oal_tables(profile, out, suffix, cfg["oal_variants"], command),
              **ablations.write_paper1(profile, out, suffix, cfg["metric_losses"], command),
              "table4": ablations.write_sd_as_test(profile, cfg["test_runs"], out, suffix, command)}
    tables["claims"] = ablations.write_claims(tables, profile, out, suffix, command)
    for name, table in tables.items():
        print(f"== {name}\n{table.to_string()}\n")


def run_grid(args) -> None:
    runs = pipeline.grid_runs() if args.full else [tuple(spec.partition(":")[::2]) for spec in args.runs]
    runs = [(loss, generator or None) for loss, generator in runs]
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = override(profile, seeds=tuple(args.seeds))
    df = pipeline.evaluate(profile, runs)
    suffix = args.suffix if args.suffix is not None else ("_full" if args.full else "_cli")
    command = (f"python -m ood_lib grid --profile {profile.name} "
               + ("--full" if args.full else f"--runs {' '.join(args.runs)}")
               + f" --seeds {' '.join(map(str, profile.seeds))} --score {args.score} --suffix '{suffix}'")
    out = report.results_dir(profile.name)
    report.write_score_tables(df, out, suffix, f"Profile `{profile.name}`, `{command}`")
    print(report.write_grid(df, out, f"loss_grid{suffix}", args.score, command).to_string())


if __name__ == "__main__":
    main()
