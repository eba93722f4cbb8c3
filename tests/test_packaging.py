"""pyproject.toml, environment.yml and the console script agree."""

import re
import subprocess
import sys
import tomllib

import yaml

from conftest import CONDA_TO_PYPI, ROOT, requirement_name


def test_environment_yml_lists_what_pyproject_lists():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = {requirement_name(r) for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {requirement_name(r) for r in dep["pip"] if not r.startswith("-")}
        elif requirement_name(dep) not in ("python", "pip"):
            conda.add(CONDA_TO_PYPI.get(requirement_name(dep), requirement_name(dep)))
    assert conda | pip == pyproject


def test_no_file_asks_for_a_torch_newer_than_2_14_1():
    texts = [(ROOT / f).read_text() for f in ("pyproject.toml", "environment.yml", "Makefile")]
    for text in texts:
        for m in re.finditer(r"(?:torch|pytorch)\s*(==|>=|<=|<|>)\s*([0-9.]+)", text):
            op, version = m.groups()
            if op in ("==", ">=", ">"):
                assert tuple(map(int, version.split("."))) <= (2, 14, 1), m.group(0)


def test_console_script_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "mtdiff.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("data", "train", "sample", "predict"):
        assert cmd in out.stdout


def test_cli_reports_bad_input_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mtdiff.cli", "data", "--dataset", "digitz", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "digits" in res.stderr and "Traceback" not in res.stderr
