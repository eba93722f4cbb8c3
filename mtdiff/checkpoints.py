"""Checkpoints of a run folder: list, write, read (checksum verified), fall back, load a run.

A checkpoint is ``checkpoints/ckpt-<step>.pt`` (``torch.save`` of a dict with the model, EMA,
optimizer and RNG states, the resolved config and the dataset info) and, beside it,
``ckpt-<step>.pt.sha256``: the SHA-256 of the checkpoint's bytes. Both are written atomically
(temp file + rename), the digest first, so a kill leaves either a complete pair or a digest
without its checkpoint (ignored), never a checkpoint with a stale digest. Reading verifies the
digest, so flipped bytes that torch would still unpickle are refused, not silently trained on.

Everything that can go wrong with a file the user or a crash left behind is a one-line
:class:`~mtdiff.errors.CheckpointError` naming the file; during resume the newest usable
checkpoint wins and each skipped one is reported with the reason.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import torch

from mtdiff.config import RunConfig, config_from_dict, flatten_dotted, load_yaml, merge
from mtdiff.data import DatasetInfo
from mtdiff.errors import CheckpointError, ConfigError
from mtdiff.models import build_diffusion, build_model, check_config
from mtdiff.utils import _atomic_path, atomic_write_text

CKPT_RE = re.compile(r"ckpt-(\d{8})\.pt$")
REQUIRED_KEYS = ("model", "ema", "optimizer", "step", "config")
DIGEST_SUFFIX = ".sha256"
# mtdiff.utils._atomic_path names its temp files ".<name>.<random>.tmp" beside the target.
TEMP_GLOB = ".*.tmp"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt-{step:08d}.pt"


def digest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint of a run, oldest first."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = []
    for p in ckpt_dir.glob("ckpt-*.pt") if ckpt_dir.is_dir() else []:
        m = CKPT_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def write_checkpoint(payload: dict, path: str | Path) -> None:
    """``payload`` to ``path`` with its SHA-256 beside it, both atomically, digest first."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    atomic_write_text(digest_path(path), hashlib.sha256(data).hexdigest() + "\n")
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy a checkpoint and its digest (e.g. the last one to ``final.pt``), atomically."""
    src, dst = Path(src), Path(dst)
    data = src.read_bytes()
    if digest_path(src).exists():
        atomic_write_text(digest_path(dst), digest_path(src).read_text())
    with _atomic_path(dst) as tmp:
        tmp.write_bytes(data)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint after verifying its digest; CheckpointError (one line) if it is
    missing, altered, truncated or not an mtdiff checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; train the model first (mtdiff train)")
    data = path.read_bytes()
    digest_file = digest_path(path)
    if not digest_file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no checksum file {digest_file.name}; it cannot be "
                              f"verified (incomplete write, or not written by this mtdiff)")
    expected = digest_file.read_text().strip()
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its checksum ({digest_file.name}): "
                              f"the file was altered or damaged")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, bad pickle, ...: all mean "unusable"
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {reason})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it is not an mtdiff checkpoint")
    return state


def check_state_fits(module: torch.nn.Module, state_dict: dict, path: str | Path, what: str = "model") -> None:
    """Refuse (one line naming the file) weights of another architecture before loading them:
    ``load_state_dict`` would raise a many-line error after changing part of the module."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or extra or shapes:
        detail = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                  else f"{shapes[0]} is {tuple(state_dict[shapes[0]].shape)}, expected {tuple(own[shapes[0]].shape)}")
        n = len(missing) + len(extra) + len(shapes)
        raise CheckpointError(f"checkpoint {str(path)!r} holds {what} weights of another architecture "
                              f"({detail}; {n} tensor(s) differ); it does not belong to this config")


def latest_checkpoint(run_dir: str | Path, log=print, accept=None) -> dict | None:
    """Newest usable checkpoint of a run (``state["path"]`` says which); each unusable one is
    reported with a warning naming the file and skipped. ``accept(state, path)`` may raise a
    CheckpointError to refuse a readable one (e.g. another architecture or a later step)."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            state = read_checkpoint(path)
            if accept is not None:
                accept(state, path)
        except CheckpointError as exc:
            log(f"warning: {exc}; falling back to the previous checkpoint")
            continue
        state["path"] = str(path)
        return state
    return None


def clean_temp_files(run_dir: str | Path, log=print) -> list[Path]:
    """Delete temp files a killed atomic write left in a run folder (and its checkpoints/), and
    digests whose checkpoint never appeared; returns what was removed."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            removed += [p for p in folder.glob(TEMP_GLOB) if p.is_file()]
            removed += [p for p in folder.glob(f"*.pt{DIGEST_SUFFIX}")
                        if not p.with_name(p.name[: -len(DIGEST_SUFFIX)]).exists()]
    for p in removed:
        p.unlink(missing_ok=True)
    if removed:
        log(f"note: removed {len(removed)} leftover file(s) of an interrupted write: "
            f"{', '.join(p.name for p in removed)}")
    return removed


def read_run_config(path: str | Path) -> dict:
    """A run folder's config.yaml as a dict of every key (defaults for keys added since),
    checked; a one-line ConfigError naming the file if it is unreadable or invalid."""
    path = Path(path)
    try:
        saved = load_yaml(path)
        if saved is None:
            saved = {}
        if not isinstance(saved, dict):
            raise ConfigError("it must hold a mapping at the top level")
        values = merge(RunConfig().to_dict(), saved)  # keys added to RunConfig since then: their defaults
        return config_from_dict(values).to_dict()
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(f"run config {str(path)!r} is not a valid mtdiff config ({message}); "
                          f"restore it, or delete the run folder to start over") from None


def diff_keys(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two (nested) configs."""
    fa, fb = flatten_dotted(a), flatten_dotted(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def load_run(run_dir_or_ckpt: str | Path, *, use_ema: bool = True, device="cpu"):
    """(model, diffusion, cfg, info, checkpoint) from a run folder (final.pt, else the newest
    usable checkpoint) or a checkpoint file; the model holds the EMA weights unless use_ema=False."""
    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        state = read_checkpoint(p / "final.pt") if (p / "final.pt").exists() else latest_checkpoint(p)
        if state is None:
            raise CheckpointError(f"{str(p)!r} holds no checkpoint; train it first: mtdiff train --out {p}")
        path = p / "final.pt" if (p / "final.pt").exists() else Path(state["path"])
    else:
        state, path = read_checkpoint(p), p
    try:
        cfg = config_from_dict(state["config"])
        check_config(cfg)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} holds a config this mtdiff refuses ({exc})") from None
    info = DatasetInfo.from_dict(state["info"])
    model = build_model(cfg, info)
    key = "ema" if use_ema else "model"
    check_state_fits(model, state[key], path, key)
    model.load_state_dict(state[key])
    model.to(device).eval()
    diffusion = build_diffusion(cfg) if model.kind == "diffusion" else None
    return model, diffusion, cfg, info, state
