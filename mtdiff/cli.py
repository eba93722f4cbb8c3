"""The ``mtdiff`` command: thin entry points over the library.

    mtdiff data     --dataset digits --out results/digits/data
    mtdiff train    --config config/runs/example.yaml --out results/run [--set train.total_kimg=20 ...]
    mtdiff sample   --run results/run --out results/run/samples --num-samples 500
    mtdiff predict  --run results/run --task label --split test --out results/run/pred_label.npz
    mtdiff evaluate ...   (see ``mtdiff evaluate --help``)
    mtdiff report   --root results --dataset digits --out results/digits/report

Errors in what the user gave (config keys and values, paths, checkpoints) are printed as one
line, ``error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtdiff.errors import MtdiffError
from mtdiff.progress import add_progress_argument


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML run config (defaults: mtdiff/config.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.total_kimg=20 (repeatable)")


def cmd_data(args) -> None:
    from mtdiff.data.prepare import prepare_dataset

    from mtdiff.config import parse_yaml

    options = {}
    for pair in args.option:
        key, _, raw = pair.partition("=")
        options[key] = parse_yaml(raw, f"--option {key}")
    card = prepare_dataset(args.dataset, args.out, image_size=args.image_size, root=args.root,
                           download=args.download, seed=args.seed, num_samples=args.num_samples, **options)
    sizes = ", ".join(f"{k} {v}" for k, v in card.get("sizes", {}).items())
    print(f"wrote {args.out}/{{train,test}}.npz, card.json, card.md, preview.png ({args.dataset}: {sizes})")


def cmd_train(args) -> None:
    from mtdiff.models import load_run_config
    from mtdiff.train import train

    cfg = load_run_config(args.config, args.overrides)
    train(cfg, args.out, progress=args.progress, restart_on_change=args.restart_on_change)


def run_device(run: str, device: str | None) -> str:
    """``--device`` if given, else the device the run was trained for (its config.yaml's
    train.device): a run trained with device cuda samples and predicts on the GPU, or stops at
    once where none is visible, instead of quietly taking hours on the CPU (device auto)."""
    if device is not None:
        return device
    from mtdiff.checkpoints import read_run_config

    saved = Path(run) / "config.yaml"
    return read_run_config(saved)["train"]["device"] if saved.is_file() else "auto"


def cmd_sample(args) -> None:
    from mtdiff.sample import generate

    generate(args.run, args.out, num_samples=args.num_samples, batch_size=args.batch_size, sampler=args.sampler,
             steps=args.steps, eta=args.eta, seed=args.seed, condition=args.condition, ema=False if args.no_ema else None,
             clip_x0=False if args.no_clip else None, guidance=args.guidance, guidance_scale=args.guidance_scale,
             device=run_device(args.run, args.device), precision=args.precision,
             write_pngs=not args.no_pngs, progress=args.progress)


def cmd_predict(args) -> None:
    from mtdiff.predict import predict_split

    predict_split(args.run, args.out, task=args.task, split=args.split, procedure=args.procedure,
                  t_infer=args.t_infer, num_draws=args.num_draws, batch_size=args.batch_size, seed=args.seed,
                  device=run_device(args.run, args.device), ema=not args.no_ema)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtdiff", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="prepare a dataset's splits, card and preview grid")
    p.add_argument("--dataset", required=True, help="dataset name (mtdiff.data.DATASETS)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default: the dataset's)")
    p.add_argument("--root", default=None, help="folder of downloaded datasets (torchvision-backed ones)")
    p.add_argument("--download", action="store_true", help="allow torchvision to download a missing dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=None, help="generated scenes / subsample size")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="dataset-specific option")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a model (resumes automatically)")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, final.pt)")
    add_progress_argument(p)
    p.add_argument("--restart-on-change", action="store_true",
                   help="if --out holds a run of another config, start over (its files set aside as *.replaced) "
                        "instead of refusing; the workflow passes it, as it reruns training only when the config "
                        "training reads has changed")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate samples from a trained diffusion model")
    p.add_argument("--run", required=True, help="run folder or checkpoint file")
    p.add_argument("--out", required=True, help="output folder")
    # defaults (None): the run config's `sample` section
    p.add_argument("--num-samples", type=int, default=None, help="default: sample.num_samples of the run")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--sampler", default=None, help="ddpm | ddim (default: sample.sampler of the run)")
    p.add_argument("--steps", type=int, default=None, help="number of network evaluations, NFE (default: sample.steps)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta: 0 deterministic, 1 ancestral (default: sample.eta)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--condition", default=None,
                   help="none | label=K | label=balanced | mask=test | masked_image=test")
    p.add_argument("--no-ema", action="store_true", help="sample from the raw (non-EMA) weights")
    p.add_argument("--no-clip", action="store_true", help="do not clip predicted z_0 to [-1, 1]")
    p.add_argument("--guidance", default=None, help="none | head | cfg (default: sample.guidance of the run)")
    p.add_argument("--guidance-scale", type=float, default=None, help="guidance scale s >= 0 (default: sample.guidance_scale)")
    p.add_argument("--no-pngs", action="store_true", help="skip per-image PNG files")
    p.add_argument("--device", default=None,
                   help="auto | cpu | cuda | cuda:N (default: the run's train.device; cuda fails fast without a GPU)")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="default: the run's train.precision")
    add_progress_argument(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("predict", help="labels or masks of a dataset split from a trained model")
    p.add_argument("--run", required=True, help="run folder or checkpoint file")
    p.add_argument("--out", required=True, help="output .npz (true and predicted values)")
    p.add_argument("--task", required=True, choices=["label", "mask"])
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--procedure", default=None, help="MT models: head | elbo | elbo_joint (labels); default: the run's config")
    p.add_argument("--t-infer", type=int, default=None, help="MT models: timestep of the head readout")
    p.add_argument("--num-draws", type=int, default=None, help="MT models: noise draws averaged")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: the run's train.device")
    p.add_argument("--no-ema", action="store_true")
    p.set_defaults(func=cmd_predict)

    from mtdiff.evaluate import add_evaluate_parser
    from mtdiff.report import add_report_parser

    add_evaluate_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MtdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
