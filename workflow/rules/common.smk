# Shared helpers and config-derived constants for the rules.
import sys
from pathlib import Path

RESULTS = config["results"]
DATASETS = list(config["datasets"])
# Rules run `python -m mtdiff.cli` from this checkout, with or without an installed package.
MTDIFF = f"PYTHONPATH={Path(workflow.basedir).resolve()}${{PYTHONPATH:+:$PYTHONPATH}} {sys.executable} -m mtdiff.cli"
