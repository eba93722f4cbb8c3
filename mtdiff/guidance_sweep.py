"""Guidance sweep: conditional accuracy and class-balanced conditional FID/KID of a
label-conditioned model against the guidance scale (docs/method.md, section 7).

    python -m mtdiff.guidance_sweep --run results/digits/train/mt_label/seed0 \
        --judge results/digits/train/classifier/seed0 --extractor-weights results/digits/extractor/domain.pt \
        --samples-root results/digits/samples_guided/mt_label/seed0 --out results/digits/metrics/guidance_mt_label_seed0.jsonl

For every scale s of ``eval.guidance_scales`` it draws ``eval.num_samples`` images given the
classes 0..K-1 in turn (``--condition label=balanced``), with ``guidance`` head for MT models
and cfg for ``ddpm_cond`` (``--guidance`` overrides), keeps them under ``<samples-root>/s<s>/``
(``samples.npz``, ``grid.png``, ``sample.json``), and writes one record per metric and scale:
``guided_cond_accuracy`` (judged by the trained classifier) and ``guided_cond_fid`` /
``guided_cond_kid_mean`` / ``guided_cond_kid_std`` against the reference split. Every record's
``extra`` carries ``guidance`` and ``guidance_scale`` (and the sample protocol). The metric
names differ from the unguided ``cond_*`` records so that tables never mix scales.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mtdiff.errors import ConfigError, exit_status, choice_error

METRIC_PREFIX = "guided_"
SWEEP_METRICS = ("guided_cond_accuracy", "guided_cond_fid", "guided_cond_kid_mean", "guided_cond_kid_std")


def default_guidance(model) -> str:
    """head for MT models (they have the label head), cfg for the class-conditional backbone."""
    return "cfg" if model.class_conditional else "head"


def scale_folder(root: str | Path, scale: float) -> Path:
    return Path(root) / f"s{scale:g}"


def sweep(run, judge, weights, out, *, samples_root=None, guidance: str | None = None, scales=None,
          num_samples: int | None = None, seed: int = 0, cache_dir=None, overrides: list[str] | None = None,
          log=print) -> list[dict]:
    """Run the sweep of one trained run; returns the records (also written to ``out``)."""
    from mtdiff import evaluate
    from mtdiff.samplers import GUIDANCES, check_guidance
    from mtdiff.generate import generate
    from mtdiff.train import load_run

    model, _, cfg, info, _ = load_run(run, device="cpu")
    if overrides:  # the workflow's current eval / sample values (the run folder keeps training time's)
        cfg = evaluate._run_config(run, overrides)
    if model.kind != "diffusion" or not (model.class_conditional or "label" in model.modalities):
        raise ConfigError(f"run {str(run)!r} (model={cfg.model}) cannot generate given a class; the sweep needs "
                          f"ddpm_cond or an MT model with a label modality")
    guidance = guidance or default_guidance(model)
    if guidance not in GUIDANCES or guidance == "none":
        raise choice_error("--guidance", guidance, [g for g in GUIDANCES if g != "none"])
    scales = tuple(cfg.eval.guidance_scales if scales is None else scales)
    if len(scales) < 1:
        raise ConfigError("eval.guidance_scales must hold at least one scale")
    scales = tuple(check_guidance(guidance, s) for s in scales)
    num_samples = num_samples or cfg.eval.num_samples
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(samples_root) if samples_root else Path(tmp) / "samples"
        for scale in scales:
            folder = scale_folder(root, scale)
            generate(run, folder, num_samples=num_samples, seed=seed, condition="label=balanced", guidance=guidance,
                     guidance_scale=scale, write_pngs=False, progress=False, log=lambda *_: None)
            recs = evaluate.conditional(folder, judge, Path(tmp) / "acc.jsonl")
            recs += evaluate.generation(folder, weights, Path(tmp) / "fid.jsonl", metric_prefix="cond_",
                                        cache_dir=cache_dir, config=cfg)
            for r in recs:
                r["metric"] = METRIC_PREFIX + r["metric"]
                r["extra"]["sample_folder"] = str(folder) if samples_root else None
            records += recs
            acc = next(r["value"] for r in recs if r["metric"] == "guided_cond_accuracy")
            fid = next(r["value"] for r in recs if r["metric"] == "guided_cond_fid")
            log(f"{cfg.model}: guidance={guidance} s={scale:g}: accuracy {acc:.3f}, class-balanced FID {fid:.3f}")
    evaluate._write(records, out)
    return records


def parse_scales(text: str | None) -> list[float] | None:
    """``--scales "0,1,4"`` -> [0.0, 1.0, 4.0] (None stays None: the config's scales)."""
    if text is None:
        return None
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--scales {text!r}: accepted: comma-separated numbers >= 0") from None


def guided_evaluation_parser(prog: str, doc: str, *, run_help: str, judge: tuple[str, str], scales_default: str | None,
                             scales_help: str, samples_root_help: str) -> argparse.ArgumentParser:
    """The options the guidance sweep and mask-to-image (mtdiff.mask_to_image) share: a run, its
    judge (``judge``: option name and help), the extractor weights, the records file, the
    guidance scales, the number of images, where samples go, the seed."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--run", required=True, help=run_help)
    p.add_argument(judge[0], required=True, help=judge[1])
    p.add_argument("--extractor-weights", default=None,
                   help="domain extractor weights (not needed with eval.extractor: inception)")
    p.add_argument("--out", required=True, help="JSONL records file to write")
    p.add_argument("--scales", default=scales_default, help=scales_help)
    p.add_argument("--num-samples", type=int, default=None, help="default: eval.num_samples")
    p.add_argument("--samples-root", default=None, help=samples_root_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="reference-feature cache (the FID jobs' folder), read or filled")
    return p


def main(argv: list[str] | None = None) -> int:
    p = guided_evaluation_parser(
        "python -m mtdiff.guidance_sweep", __doc__, run_help="run folder of ddpm_cond or an MT model with a label modality",
        judge=("--judge", "run folder of a trained classifier"), scales_default=None,
        scales_help="comma-separated scales (default: eval.guidance_scales)",
        samples_root_help="keep each scale's samples under this folder (s<scale>/)")
    p.add_argument("--guidance", default=None, help="head | cfg (default: head for MT models, cfg for ddpm_cond)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config values on top of the run's config.yaml (the workflow passes the current ones)")
    a = p.parse_args(argv)
    return exit_status(lambda: sweep(
        a.run, a.judge, a.extractor_weights, a.out, samples_root=a.samples_root, guidance=a.guidance,
        scales=parse_scales(a.scales), num_samples=a.num_samples, seed=a.seed, cache_dir=a.cache_dir,
        overrides=a.overrides))


if __name__ == "__main__":
    sys.exit(main())
