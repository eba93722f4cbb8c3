"""Metric records: one JSON object per measured number, stored as JSON Lines.

Every record carries the protocol fields (:data:`PROTOCOL_FIELDS`) — what was measured, on which
model/checkpoint/sampler, against which reference and with which feature extractor — plus a
free ``extra`` dict (e.g. ``condition``, ``t_infer``, ``procedure``). Every protocol key must be
present; fields that do not apply to a record (e.g. ``sampler``/``nfe`` for a classifier's
accuracy, ``checkpoint_step`` for the real-data floor) are written as ``null`` explicitly.
Non-finite ``value`` (NaN/inf) is stored as ``null``.

``precision`` (fp32 | bf16 | fp16) and ``device`` (cpu | cuda) say how the measured network
ran while it generated or inferred what the number measures (read from what that step wrote,
e.g. ``sample.json``; never the precision training used), so a report can refuse to put numbers
of different arithmetic in one column. Both are ``null`` where no network ran (the real-data
floor, the Gaussian anchor) or where it is unknown (samples generated before sample.json kept
the precision). Writers build records with :func:`metric_record`, which takes both as required
keywords, so none can forget them; files written before these two fields existed still load,
with both ``null``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from mtdiff.errors import MtdiffError
from mtdiff.io import JsonLinesError, append_jsonl, atomic_open, read_jsonl

if TYPE_CHECKING:
    import pandas as pd

PROTOCOL_FIELDS = (
    "dataset",
    "model",
    "seed",
    "checkpoint_step",
    "ema",
    "sampler",
    "nfe",
    "n_generated",
    "reference_split",
    "n_reference",
    "extractor",
    "metric",
    "value",
    "wall_time_s",
    "precision",
    "device",
)
# Protocol fields added after records were first written: a records file without them still
# loads (:func:`iter_records` reads them as null); a record written now must carry them.
LATER_FIELDS = ("precision", "device")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")


class RecordError(MtdiffError, ValueError):
    """A metric record is incomplete or malformed, or a records file cannot be read."""


@dataclass
class MetricRecord:
    """One measured number with its protocol context (see module docstring for nullability)."""

    dataset: str
    model: str
    seed: int
    checkpoint_step: int | None
    ema: bool | None
    sampler: str | None
    nfe: int | None
    n_generated: int | None
    reference_split: str | None
    n_reference: int | None
    extractor: str | None
    metric: str
    value: float | None
    wall_time_s: float
    precision: str | None = None  # fp32 | bf16 | fp16 the network ran in; null: no network ran
    device: str | None = None  # cpu | cuda it ran on; null: no network ran
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate_values(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MetricRecord":
        """Build a record from a mapping; a missing protocol field or an unknown key is a :class:`RecordError`."""
        if not isinstance(d, Mapping):
            raise RecordError(f"a metric record must be a JSON object, got {type(d).__name__}")
        for name in PROTOCOL_FIELDS:
            if name not in d:
                raise RecordError(f"metric record is missing protocol field {name!r} (write null if it does not apply)")
        unknown = sorted(set(d) - set(PROTOCOL_FIELDS) - {"extra"})
        if unknown:
            raise RecordError(f"metric record has unknown field(s) {', '.join(map(repr, unknown))}; put them under 'extra'")
        extra = d.get("extra") or {}
        return cls(**{k: d[k] for k in PROTOCOL_FIELDS}, extra=extra)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _validate_values(r: MetricRecord) -> None:
    def bad(name, want):
        return RecordError(f"metric record field {name}={getattr(r, name)!r} is invalid; expected {want}")

    for name in ("dataset", "model", "metric"):
        v = getattr(r, name)
        if not isinstance(v, str) or not v:
            raise bad(name, "a non-empty string")
    for name in ("sampler", "reference_split", "extractor"):
        v = getattr(r, name)
        if v is not None and (not isinstance(v, str) or not v):
            raise bad(name, "a non-empty string or null")
    if not _is_int(r.seed):
        raise bad("seed", "an integer")
    r.seed = int(r.seed)
    for name in ("checkpoint_step", "nfe", "n_generated", "n_reference"):
        v = getattr(r, name)
        if v is not None:
            if not _is_int(v) or v < 0:
                raise bad(name, "a non-negative integer or null")
            setattr(r, name, int(v))
    if r.ema is not None and not isinstance(r.ema, bool):
        raise bad("ema", "true, false or null")
    if r.value is not None:
        if not _is_num(r.value):
            raise bad("value", "a number or null")
        r.value = float(r.value) if math.isfinite(float(r.value)) else None
    if not _is_num(r.wall_time_s) or not math.isfinite(float(r.wall_time_s)) or r.wall_time_s < 0:
        raise bad("wall_time_s", "a non-negative number of seconds")
    r.wall_time_s = float(r.wall_time_s)
    if r.precision is not None and r.precision not in PRECISIONS:
        raise bad("precision", f"one of {', '.join(PRECISIONS)} or null")
    if r.device is not None and r.device not in DEVICES:
        raise bad("device", f"one of {', '.join(DEVICES)} or null")
    if not isinstance(r.extra, dict):
        raise bad("extra", "a JSON object (dict)")
    try:
        json.dumps(r.extra, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RecordError(f"metric record field extra is not JSON-serialisable ({e}); use plain numbers, strings, lists, dicts") from None


def device_type(device) -> str | None:
    """``"cuda:1"`` / ``torch.device("cuda", 1)`` -> ``"cuda"``; ``None`` stays ``None``. Records
    keep the kind of device, not its index: which GPU ran a job does not change the arithmetic."""
    return None if device is None else str(device).split(":", 1)[0]


def ran_with(meta: Mapping[str, Any]) -> dict:
    """``precision`` and ``device`` of a step that ran a network, from the protocol it wrote
    (``sample.json`` of mtdiff.generate, ``predict.json`` of mtdiff.predict, or the dict they
    return); ``None`` for a key it lacks (folders written before it was kept)."""
    return {"precision": meta.get("precision"), "device": device_type(meta.get("device"))}


def metric_record(*, dataset: str, model: str, seed: int, metric: str, value: float | None, wall_time_s: float,
                  precision: str | None, device: str | None, checkpoint_step: int | None = None,
                  ema: bool | None = None, sampler: str | None = None, nfe: int | None = None,
                  n_generated: int | None = None, reference_split: str | None = None, n_reference: int | None = None,
                  extractor: str | None = None, extra: dict | None = None) -> dict:
    """One validated record as a plain dict (what every writer of records builds them with).

    ``precision`` and ``device`` have no default: a writer states how the measured network ran
    (:func:`ran_with` reads them from a step's protocol), or ``None`` where no network ran.
    Protocol fields that do not apply default to ``None``; ``device`` is reduced to its kind
    (``cuda:0`` -> ``cuda``)."""
    record = MetricRecord(dataset=dataset, model=model, seed=seed, checkpoint_step=checkpoint_step, ema=ema,
                          sampler=sampler, nfe=nfe, n_generated=n_generated, reference_split=reference_split,
                          n_reference=n_reference, extractor=extractor, metric=metric, value=value,
                          wall_time_s=wall_time_s, precision=precision, device=device_type(device),
                          extra=dict(extra or {}))
    return record.to_dict()


def _to_record(r) -> MetricRecord:
    if isinstance(r, MetricRecord):
        _validate_values(r)
        return r
    return MetricRecord.from_dict(r)


def append_records(path: str | Path, records: Iterable[MetricRecord | Mapping[str, Any]]) -> int:
    """Validate ``records`` and append them to the JSONL file ``path`` (one line each; parent folders
    created; one write, flushed and fsynced). Nothing is written if any record is invalid.
    Returns the number of records written."""
    if isinstance(records, (MetricRecord, Mapping)):
        records = [records]
    recs = [_to_record(r) for r in records]
    if not recs:
        return 0
    return append_jsonl(path, (r.to_dict() for r in recs), allow_nan=False, sort_keys=False)


def _iter_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def iter_records(paths) -> Iterable[MetricRecord]:
    """Yield the records of one or several JSONL files; blank lines are skipped."""
    for p in _iter_paths(paths):
        if not p.is_file():
            raise RecordError(f"metric records file {str(p)!r} not found; check the path")
        try:
            for lineno, obj in read_jsonl(p):
                if isinstance(obj, dict):  # written before LATER_FIELDS existed: read them as null
                    obj = {**{name: None for name in LATER_FIELDS}, **obj}
                try:
                    yield MetricRecord.from_dict(obj)
                except RecordError as e:
                    raise RecordError(f"{p}:{lineno}: {e}") from None
                except TypeError as e:
                    raise RecordError(f"{p}:{lineno}: invalid metric record ({e})") from None
        except JsonLinesError as e:
            raise RecordError(str(e)) from None


def records_to_frame(records: Iterable[MetricRecord]) -> pd.DataFrame:
    """Records as a DataFrame: the protocol fields, then ``extra`` flattened to ``extra.<key>`` columns."""
    import pandas as pd  # lazy: keeps `import mtdiff.metrics` fast
    rows = []
    for r in records:
        d = r.to_dict()
        extra = d.pop("extra")
        for k, v in extra.items():
            d[f"extra.{k}"] = json.dumps(v) if isinstance(v, (dict, list)) else v
        rows.append(d)
    df = pd.DataFrame(rows)
    extra_cols = sorted(c for c in df.columns if c.startswith("extra."))
    return df.reindex(columns=list(PROTOCOL_FIELDS) + extra_cols)


def read_records(paths) -> pd.DataFrame:
    """Concatenate JSONL record files into a DataFrame (see :func:`records_to_frame`).

    A malformed line or an invalid record raises :class:`RecordError` naming the file and line."""
    return records_to_frame(list(iter_records(paths)))


def records_to_csv(paths, out_csv: str | Path) -> pd.DataFrame:
    """Read JSONL record files and write them as one CSV (atomically); returns the DataFrame."""
    df = read_records(paths)
    with atomic_open(out_csv, "w", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)
    return df


__all__ = [
    "PROTOCOL_FIELDS",
    "LATER_FIELDS",
    "MetricRecord",
    "RecordError",
    "append_records",
    "device_type",
    "metric_record",
    "ran_with",
    "iter_records",
    "read_records",
    "records_to_csv",
    "records_to_frame",
]
