"""Command line.

``python -m ood_lib sweep --profile digits --S 200 400 600 --oe-lambda 0.5 1`` selects SD/OE
hyper-parameters on the validation splits (ID val vs digits 6-9 val) and writes
``results/<profile>/<out>.{csv,md}`` (``--out``, default validation_sweep).

``python -m ood_lib grid --profile digits --runs ce:none arcface:mixup --seeds 0 1 2`` trains
each loss with each outlier source (``loss:generator``) and writes the test-split table
``results/<profile>/<out>.{csv,md}`` (default loss_grid).
"""
from __future__ import annotations

import argparse

from . import pipeline, report
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
    grid.add_argument("--runs", nargs="+", required=True, help="loss:generator pairs, e.g. ce:none oe:sd arcface:mixup")
    grid.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the profile's seeds")
    grid.add_argument("--out", default="loss_grid", help="file stem under results/<profile>/")
    args = parser.parse_args(argv)
    if args.command == "grid":
        return run_grid(args)

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


def run_grid(args) -> None:
    runs = []
    for spec in args.runs:
        loss, _, generator = spec.partition(":")
        runs.append((loss, generator or None))
    profile = get_profile(args.profile)
    if args.seeds is not None:
        profile = override(profile, seeds=tuple(args.seeds))
    df = pipeline.evaluate(profile, runs)
    out = report.results_dir(profile.name)
    df.to_csv(out / f"{args.out}.csv", index=False, float_format="%.6f")
    table = report.compact_table(df)
    command = (f"python -m ood_lib grid --profile {profile.name} --runs {' '.join(args.runs)} "
               f"--seeds {' '.join(map(str, profile.seeds))} --out {args.out}")
    (out / f"{args.out}.md").write_text(
        f"Loss × outlier source, profile `{profile.name}`, test splits; near = mean over the near-OOD sets, "
        f"far = mean over the far-OOD sets; mean ± std over seeds {list(profile.seeds)}, in %.\n\n"
        f"Command: `{command}`\n\n{report.to_markdown(table)}\n")
    print(table.to_string())


if __name__ == "__main__":
    main()
