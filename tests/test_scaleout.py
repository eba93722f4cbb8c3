"""Scale-out: GPU configs, workflow profiles, device / GPU-count errors, the GPU check script's
CPU smoke run and the conda environment files. Runs on a CPU-only machine."""

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from mtdiff.config import load_config, load_yaml
from mtdiff.errors import ConfigError

from conftest import CONDA_TO_PYPI, ENV, ROOT, SNAKEMAKE, requirement_name

GPU_CONFIGS = ("cifar10", "pets", "imagenet64")
PROFILES = ("default", "local-gpu", "slurm", "slurm-gres")


def dry_run(*args, cwd=ROOT):
    return subprocess.run([SNAKEMAKE, "-n", "--nolock", "-p", *args], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=600)


def job_blocks(stdout: str, rule: str) -> list[str]:
    """The dry-run printout of every job of ``rule``."""
    return [b for b in re.split(r"\n(?=\[|rule |localrule )", stdout) if b.startswith((f"rule {rule}:", f"localrule {rule}:"))]


# ---------------------------------------------------------------------------------------------
# configs and profiles


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_run_configs_validate_for_every_model(name):
    workflow = load_yaml(ROOT / "config" / f"{name}.yaml")
    (dataset, d), = workflow["datasets"].items()
    for model in d["models"]:
        cfg = load_config(ROOT / d["run_config"], [f"model={model}"])
        assert cfg.data.dataset == dataset and cfg.train.device == "cuda" and cfg.data.download is False
        assert cfg.eval.extractor == "inception" and cfg.eval.feature_extractor_weights_path
    text = (ROOT / d["run_config"]).read_text()
    # the cost: measured on a GPU, the raw output of that run kept in the folder it names; the
    # estimate made before any GPU run stays beside it, labelled as such
    assert "GPU-hours" in text and "MEASURED on one H200" in text and "ESTIMATE" in text
    words = re.sub(r"\s*\n#\s*", " ", text)  # the comment's lines joined
    folder = re.search(r"raw output in (docs/measurements/[\w.-]+)/", words)
    assert folder and (ROOT / folder.group(1) / "first_hour.json").exists(), folder
    assert "FID protocol" in text


def test_imagenet64_backbone_is_close_to_adm64():
    cfg = load_config(ROOT / "config/runs/imagenet64.yaml", ["model=mt_masked"])
    n = cfg.net
    assert (n.model_channels, n.channel_mult, n.num_res_blocks) == (192, (1, 2, 3, 4), 3)
    assert (n.attention_resolutions, n.head_channels, n.dropout) == ((32, 16, 8), 64, 0.1)
    assert cfg.diffusion.noise_schedule == "cosine" and cfg.data.dataset == "imagefolder" and cfg.train.gpus == 4


def test_default_profile_dry_run_keeps_the_default_workflow(tmp_path):
    res = dry_run("--workflow-profile", "workflow/profiles/default", "--config", f"results={tmp_path}/results")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    trains = job_blocks(res.stdout, "train")
    default = load_yaml(ROOT / "config/config.yaml")["datasets"]["digits"]
    assert len(trains) == len(default["models"]) * len(default["seeds"])  # the default digits benchmark
    for block in trains:
        assert "python -m mtdiff.cli train" in block and "torch.distributed.run" not in block
        assert "gpu=" not in block or "gpu=0" in block


def test_local_gpu_profile_dry_run_with_a_missing_data_root(tmp_path):
    # the dataset root does not exist: a dry run must not need the data
    workflow = load_yaml(ROOT / "config/pets.yaml")
    workflow["datasets"]["pets"]["overrides"] = {"data.root": str(tmp_path / "no-such-folder")}
    cfg_file = tmp_path / "pets.yaml"
    cfg_file.write_text(yaml.safe_dump(workflow))
    res = dry_run("--workflow-profile", "workflow/profiles/local-gpu", "--configfile", str(cfg_file),
                  "--config", f"results={tmp_path}/results")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert not (tmp_path / "no-such-folder").exists()
    trains = job_blocks(res.stdout, "train")
    assert len(trains) == 18  # 6 models x 3 seeds, and no digits jobs (--replace-workflow-config)
    assert "/digits/" not in res.stdout
    assert all("gpu=1" in b for b in trains + job_blocks(res.stdout, "sample"))
    prep = job_blocks(res.stdout, "prepare_data")[0]
    assert f"--root {tmp_path / 'no-such-folder'}" in prep and "--image-size 64" in prep


def test_slurm_profile_dry_run_launches_torchrun_and_asks_for_the_gpus(tmp_path):
    # The plugin is not involved in a dry run (no sbatch needed): Snakemake plans the jobs with
    # the profile's resources; test_slurm_profile_names_only_known_keys checks the names.
    res = dry_run("--workflow-profile", "workflow/profiles/slurm", "--configfile", "config/imagenet64.yaml",
                  "--config", f"results={tmp_path}/results")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    trains = job_blocks(res.stdout, "train")
    assert len(trains) == 3
    for block in trains:
        assert "python -m torch.distributed.run --standalone --nproc_per_node=4 -m mtdiff.cli train" in block
        assert "gpu=4" in block and "slurm_partition=your_gpu_partition" in block and "nodes=1" in block
    assert all("gpu=1" in b for b in job_blocks(res.stdout, "sample"))
    # FID and anchor jobs extract Inception features on a GPU (issue 15), reading the reference
    # features one reference_features job cached; an Inception config needs no domain extractor
    for rule in ("fid", "anchors", "reference_features"):
        blocks = job_blocks(res.stdout, rule)
        assert blocks and all("gpu=1" in b and "slurm_partition=your_gpu_partition" in b for b in blocks), rule
    assert not job_blocks(res.stdout, "train_extractor")


def _plugin_resource_names() -> set[str]:
    """Every job resource the SLURM executor plugin (and its job-step plugin) reads."""
    import snakemake_executor_plugin_slurm as slurm
    import snakemake_executor_plugin_slurm_jobstep as jobstep

    names = set()
    for pkg in (slurm, jobstep):
        for f in Path(pkg.__file__).parent.glob("*.py"):
            text = f.read_text()
            names |= set(re.findall(r"resources\.get\(\s*[\"'](\w+)[\"']", text))
            names |= set(re.findall(r"resources\.(\w+)\b", text)) - {"get"}
    return names


def test_slurm_profile_names_only_known_keys():
    from snakemake.cli import get_argument_parser
    from snakemake_executor_plugin_slurm import ExecutorSettings

    profile = load_yaml(ROOT / "workflow/profiles/slurm/config.yaml")
    options = {s[2:] for a in get_argument_parser()._actions for s in a.option_strings if s.startswith("--")}
    plugin_settings = {f"slurm-{f.name.replace('_', '-')}" for f in dataclasses.fields(ExecutorSettings)}
    for key in profile:
        assert key in options, f"{key} is not a snakemake option"
        if key.startswith("slurm-"):
            assert key in plugin_settings, f"{key} is not a setting of the slurm plugin"
    assert profile["executor"] == "slurm"
    known = _plugin_resource_names() | {"mem_mb", "runtime", "disk_mb", "tmpdir", "gpu"}
    assert {"slurm_account", "slurm_partition", "runtime", "mem_mb", "gpu", "gpu_model", "cpus_per_gpu"} <= known
    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk")), re.M))
    assert set(profile["default-resources"]) <= known
    for rule, res in profile["set-resources"].items():
        assert rule in rules, f"set-resources names rule {rule!r}, which the workflow lacks"
        assert set(res) <= known, f"{rule}: {set(res) - known} unknown to the plugin"
        assert "gpu" not in res  # the rules compute it per dataset; a profile value would override it


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_are_snakemake_options(name):
    from snakemake.cli import get_argument_parser

    profile = load_yaml(ROOT / "workflow/profiles" / name / "config.yaml")
    options = {s[2:] for a in get_argument_parser()._actions for s in a.option_strings if s.startswith("--")}
    assert set(profile) <= options
    if name == "local-gpu":
        assert profile["resources"] == {"gpu": 1}


# ---------------------------------------------------------------------------------------------
# devices and GPU counts


def _tiny(**train):
    return load_config(ROOT / ".test/runs/digits_tiny.yaml", {"model": "ddpm", "train": train})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_fails_before_training(tmp_path):
    from mtdiff.train import train

    with pytest.raises(ConfigError, match=r"train.device='cuda' but no CUDA GPU is visible"):
        train(_tiny(device="cuda"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.device_count() >= 4, reason="this machine has 4 GPUs")
def test_more_gpus_than_visible_fails_with_the_option_named(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mtdiff.cli", "train", "--config", str(ROOT / ".test/runs/digits_tiny.yaml"),
                          "--out", str(tmp_path / "run"), "--set", "model=ddpm", "--set", "train.gpus=4"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 2
    assert res.stderr.startswith("error: train.gpus=4 but") and "GPU(s) are visible" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()


def test_gpu_count_needs_a_matching_torchrun_launch(monkeypatch):
    from mtdiff.utils import check_gpu_request

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    check_gpu_request(4, 4)
    check_gpu_request(1, 2)  # gpus unset (1): torchrun chooses the process count, e.g. CPU DDP
    with pytest.raises(ConfigError, match="--nproc_per_node=4"):
        check_gpu_request(4, 1)
    with pytest.raises(ConfigError, match="train.gpus=8 but 4 CUDA GPU"):
        check_gpu_request(8, 8)


@pytest.mark.parametrize("sets, message", [
    (["train.gpus=0"], "train.gpus=0 is not accepted; accepted: an integer >= 1"),
    (["train.gpus=2", "train.device=cpu"], "needs train.device: cuda or auto"),
    (["train.gpus=2", "train.device=cuda:1"], "needs train.device: cuda or auto"),
    (["train.gpus=3", "train.batch_size=64"], "divisible by train.gpus=3"),
    (["train.tf32=maybe"], "train.tf32 must be true or false"),
])
def test_bad_gpu_options_are_refused_when_loading(sets, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "config/runs/digits.yaml", sets)


def test_new_train_keys_do_not_orphan_old_run_folders(tmp_path):
    from mtdiff.train import check_run_dir

    cfg = _tiny()
    old = cfg.to_dict()
    for key in ("tf32", "channels_last", "gpus", "compile"):
        del old["train"][key]  # a run folder written before these options existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_run_dir(tmp_path, cfg)
    check_run_dir(tmp_path, _tiny(gpus=2))  # parallelism only: resumable
    check_run_dir(tmp_path, _tiny(compile=True))  # the same math to float rounding: resumable
    with pytest.raises(ConfigError, match="differs at train.tf32"):
        check_run_dir(tmp_path, _tiny(tf32=False))  # arithmetic: not resumable
    with pytest.raises(ConfigError, match="differs at train.channels_last"):
        check_run_dir(tmp_path, _tiny(channels_last=True))  # optimizer state layout: not resumable


# ---------------------------------------------------------------------------------------------
# scripts/gpu_check.py and the environment files


@pytest.mark.slow  # ~15 s on a busy 2-core CPU, most of it imports
def test_gpu_check_cpu_smoke_run(tmp_path):
    out = tmp_path / "check.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py"), "--device", "cpu", "--steps", "3", "--quick",
                          "--channels", "16", "--threads", "1", "--json", str(out)],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for row in ("training images/s (mtdiff.train loop)", "sampling images/s", "peak memory, training",
                "achieved TFLOP/s (bare step)", "bf16 dense peak TFLOP/s", "PASS  samples are finite"):
        assert row in res.stdout
    result = json.loads(out.read_text())
    assert result["ok"] and result["samples_finite"] and result["peak_bf16_tflops"] is None
    assert result["flops_per_image"] > 0 and result["train_images_per_s"] > 0


def test_gpu_check_compile_runs_the_trainer_and_the_bare_step_compiled(tmp_path, monkeypatch):
    """--compile sets train.compile for the trainer and compiles the bare step's forward; dynamo
    captures both (fullgraph) and runs them with the `eager` backend, so no C++ compilation here."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    real_compile, compiled = torch.compile, []

    def traced(module, **kwargs):
        compiled.append(type(module).__name__)
        return real_compile(module, backend="eager", fullgraph=True)

    monkeypatch.setattr(torch, "compile", traced)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--steps", "3", "--quick", "--channels", "16", "--compile",
                           "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["compile"] is True and result["ok"] and result["bare_images_per_s"] > 0
    assert compiled == ["MTDiffusion", "MTDiffusion"]  # the trainer's forward, then the bare step's


def test_bf16_peaks_are_looked_up_by_gpu_name(monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    for name, peak in [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
                       ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 3090", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_, n=name: n)
        assert gpu_check.bf16_peak(torch.device("cuda", 0), "bf16") == peak
    assert gpu_check.bf16_peak(torch.device("cuda", 0), "fp32") is None
    assert gpu_check.bf16_peak(torch.device("cpu"), "bf16") is None


@pytest.mark.parametrize("env_file", ["environment.yml", "environment-gpu.yml"])
def test_environment_files_list_what_pyproject_lists(env_file):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {requirement_name(r) for r in project["dependencies"]}
    optional = {requirement_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    env = load_yaml(ROOT / env_file)
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {requirement_name(r) for r in dep["pip"] if not r.startswith("-")}
        elif requirement_name(dep) not in ("python", "pip"):
            names.add(CONDA_TO_PYPI.get(requirement_name(dep), requirement_name(dep)))
    assert required <= names, f"{env_file} lacks {required - names}"
    assert names <= required | optional, f"{env_file} lists {names - required - optional}, which pyproject does not"
    for m in re.finditer(r"(?:torch|pytorch)\s*(==|>=|<=|<|>)\s*([0-9.]+)", (ROOT / env_file).read_text()):
        if m.group(1) in ("==", ">=", ">"):
            assert tuple(map(int, m.group(2).split("."))) <= (2, 14, 1), m.group(0)
    if env_file == "environment-gpu.yml":
        torch_spec = next(d for d in env["dependencies"] if isinstance(d, str) and requirement_name(d) == "pytorch")
        assert torch_spec.split()[-1] == "cuda*" and "<=2.14.1" in torch_spec


def test_gres_profile_asks_for_gpus_as_gres_and_matches_the_slurm_profile(tmp_path):
    slurm = load_yaml(ROOT / "workflow/profiles/slurm/config.yaml")
    gres = load_yaml(ROOT / "workflow/profiles/slurm-gres/config.yaml")
    assert gres.pop("config") == ["gpu_request=gres"] and gres == slurm
    # results through a second configfile: a --config on the command line would replace the
    # profile's `config` list (the profile says so)
    (tmp_path / "results.yaml").write_text(f"results: {tmp_path}/results\n")
    res = dry_run("--workflow-profile", "workflow/profiles/slurm-gres", "--configfile", "config/imagenet64.yaml",
                  str(tmp_path / "results.yaml"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    trains = job_blocks(res.stdout, "train")
    assert trains and all("gres=gpu:4" in b and "gpu=0" in b for b in trains)
    assert all("gres=gpu:1" in b and "gpu=0" in b for b in job_blocks(res.stdout, "fid"))
