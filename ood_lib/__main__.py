"""Command line: ``python -m ood_lib sweep --profile digits --S 200 400 600 --oe-lambda 0.5 1``.

``sweep`` selects SD/OE hyper-parameters on the validation splits (ID val vs digits 6-9
val) and writes ``results/<profile>/<out>.{csv,md}`` (``--out``, default validation_sweep).
"""
from __future__ import annotations

import argparse

from . import pipeline, report
from .config import PROFILES, get_profile


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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    main()
