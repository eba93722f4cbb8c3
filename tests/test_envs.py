"""Conda environment files, checked statically (no conda on the test machines): every package
is one pyproject.toml declares, under its conda name, with pyproject's version bounds, from a
channel that publishes it; every rule names an environment that exists."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("environment*.yml"), *ROOT.glob("workflow/envs/*.yaml")])
# conda package -> the PyPI distribution pyproject.toml names (conda-forge names differ for these)
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
# published on bioconda, not conda-forge (https://bioconda.github.io/recipes/<name>/README.html)
BIOCONDA = {"snakemake", "snakemake-executor-plugin-slurm", "snakefmt"}
NOT_FROM_PYPROJECT = {"python", "pip"}


def _pyproject_requirements() -> dict[str, set[str]]:
    """name -> set of version constraints (e.g. {'>=2.4', '<=2.14.1'}) over all dependency lists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for rs in project.get("optional-dependencies", {}).values() for r in rs]
    out = {}
    for req in reqs:
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", req.strip()).groups()
        out[name.lower().replace("_", "-")] = {c.strip() for c in spec.split(",") if c.strip()}
    return out


def _conda_spec(dep: str) -> tuple[str, set[str], str | None]:
    """(name, version constraints, build string) of a conda MatchSpec like 'pytorch >=2.4,<=2.14.1 cuda*'."""
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*([<>=!~][^\s]*)?\s*(\S+)?", dep.strip())
    assert m, f"unreadable conda spec {dep!r}"
    name, version, build = m.groups()
    return name.lower(), {c for c in (version or "").split(",") if c}, build


@pytest.mark.parametrize("env_file", ENV_FILES)
def test_env_file_names_and_pins_agree_with_pyproject(env_file):
    env = yaml.safe_load((ROOT / env_file).read_text())
    pyproject = _pyproject_requirements()
    channels = env["channels"]
    assert channels[0] == "conda-forge" and "defaults" not in channels, channels
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{env_file}: a pip section ({dep}); every package is on conda-forge/bioconda"
        name, constraints, build = _conda_spec(dep)
        if name in NOT_FROM_PYPROJECT:
            continue
        pypi = CONDA_TO_PYPI.get(name, name)
        assert pypi in pyproject, f"{env_file}: {name} is not a dependency in pyproject.toml"
        assert constraints == pyproject[pypi], f"{env_file}: {dep!r} differs from pyproject's {pypi} {pyproject[pypi]}"
        if name in BIOCONDA:
            assert "bioconda" in channels, f"{env_file}: {name} is published on bioconda; add that channel"
        assert build is None or (name == "pytorch" and build == "cuda*"), f"{env_file}: build string in {dep!r}"
    python = next(d for d in env["dependencies"] if _conda_spec(d)[0] == "python")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert _conda_spec(python)[1] == {requires}, f"{env_file}: {python!r} vs requires-python {requires}"


def test_rule_envs_split_torch_jobs_from_light_ones():
    torch_env = {_conda_spec(d)[0] for d in yaml.safe_load((ROOT / "workflow/envs/torch.yaml").read_text())["dependencies"]}
    light = {_conda_spec(d)[0] for d in yaml.safe_load((ROOT / "workflow/envs/report.yaml").read_text())["dependencies"]}
    assert {"pytorch", "torchvision", "torch-fidelity"} <= torch_env
    assert not light & {"pytorch", "torchvision", "torch-fidelity", "snakemake"}
    assert {"nbconvert", "ipykernel", "seaborn"} <= light


def test_every_rule_names_an_existing_environment():
    envs = {}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.S | re.M):
            if rule == "all":
                continue
            m = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
            assert m, f"rule {rule} ({smk.name}) has no conda: environment"
            path = (smk.parent / m.group(1)).resolve()
            assert path.is_file(), f"rule {rule}: {m.group(1)} does not exist"
            envs[rule] = path.name
    assert envs["train"] == envs["sample"] == envs["fid"] == "torch.yaml"
    assert envs["report_tables"] == envs["report_notebook"] == envs["report_html"] == "report.yaml"


# what workflow/envs/report.yaml leaves out: the light jobs must not import these
NOT_IN_REPORT_ENV = ("torch", "torchvision", "torch_fidelity", "sklearn", "mlxtend", "snakemake")
BLOCKER = f'''
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_REPORT_ENV!r}:
            raise ImportError("not in workflow/envs/report.yaml: " + name)
sys.meta_path.insert(0, Block())
'''


def run_without_torch(code: str, *args: str, cwd=ROOT):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


def test_light_jobs_import_nothing_the_report_env_lacks():
    # the report rule's command (python -m mtdiff.report) and collect_records' (records_to_csv)
    res = run_without_torch("import mtdiff.report, mtdiff.metrics.records as r; "
                            "from mtdiff.report.__main__ import build_parser; "
                            "build_parser().parse_args(['report', '--dataset', 'digits']); "
                            "from mtdiff.metrics import records_to_csv; print('ok')")
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
