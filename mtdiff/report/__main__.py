"""``python -m mtdiff.report --root results --dataset digits ...`` == ``mtdiff report ...``.

Its own parser, not mtdiff.cli's: the CLI's parser imports every command's module (training,
sampling and evaluation import torch), and the workflow's report jobs run in the light report
environment (workflow/envs/report.yaml), which has no torch.
"""

import argparse
import sys

from mtdiff.errors import exit_status
from mtdiff.report.cli import add_report_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtdiff")  # usage reads "mtdiff report ...", as the CLI
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return exit_status(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
