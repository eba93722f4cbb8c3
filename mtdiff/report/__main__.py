"""``python -m mtdiff.report --root results --dataset digits ...`` == ``mtdiff report ...``."""

import sys

from mtdiff.cli import main

sys.exit(main(["report", *sys.argv[1:]]))
