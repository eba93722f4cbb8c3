"""Files every stage writes and reads: atomic writes, JSON and JSON Lines.

Every output goes through a temporary file in the target's folder that is flushed to disk and
then renamed over the target (``os.replace``), so an interrupted job never leaves a
half-written file under its final name -- Snakemake would otherwise take it as done. The
temporary file gets the permissions a plain ``open(path, "w")`` would (``0o666`` less the
umask), not ``mkstemp``'s private ``0o600``.

JSON Lines files (metric records, training logs) are appended record by record, so a crashed
writer can leave an unfinished last line; :func:`read_jsonl` can skip it and
:func:`append_jsonl` never glues a new record onto it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import yaml

from mtdiff.errors import ConfigError, MtdiffError


class JsonLinesError(MtdiffError, ValueError):
    """A JSON Lines file holds a line that is not JSON."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds
    (after an fsync), else delete it. For writers that want a file name (``PIL``, ``torch.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` through :func:`atomic_path`: ``with atomic_open(p) as f:
    np.savez_compressed(f, **arrays)`` leaves ``p`` complete or untouched."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open mode={mode!r}; accepted: a write mode (w, wb, wt)")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text, newlines written as given (no platform translation)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, **dumps_kwargs) -> Path:
    """``obj`` as indented JSON (``json.dumps`` options may override the indent of 2)."""
    return atomic_write_text(path, json.dumps(obj, **{"indent": 2, **dumps_kwargs}) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path, *, skip_unfinished_last_line: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, object)`` of every non-blank line of a JSON Lines file.

    A line that is not JSON raises :class:`JsonLinesError` naming the file and line, except --
    with ``skip_unfinished_last_line`` -- a last line without its newline (a writer killed
    mid-line), which is skipped with a warning."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if skip_unfinished_last_line and lineno == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}:{lineno}: skipped an unfinished last line", stacklevel=2)
                continue
            raise JsonLinesError(
                f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno}); fix or delete that line"
            ) from None
        yield lineno, obj


def append_jsonl(path: str | Path, objs: Iterable[Any], **dumps_kwargs) -> int:
    """Append one JSON line per object (created if missing), fsynced; returns how many.

    A last line left unfinished by a crashed writer is first terminated, so the new records
    start on a line of their own."""
    lines = [json.dumps(o, **dumps_kwargs) + "\n" for o in objs]
    if not lines:
        return 0
    text = "".join(lines)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    return len(lines)


__all__ = [
    "JsonLinesError",
    "append_jsonl",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "read_jsonl",
]


# --------------------------------------------------------------------------------------------
# YAML with duplicate keys refused: PyYAML silently keeps the last of two equal keys, which
# hides a pasted `train:` section. Every config file of mtdiff and the workflow is read here.


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping naming the same key twice."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """YAML ``text`` parsed with duplicate keys refused; errors are one line naming ``source``."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, _DuplicateKey):
            raise ConfigError(f"{source}: {problem}{where}; a mapping may name each key once") from None
        raise ConfigError(f"{source} is not valid YAML: {problem}{where}") from None


def load_yaml(path: str | Path) -> Any:
    """A YAML file, duplicate keys refused; a missing or unreadable file is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not readable text ({type(exc).__name__})") from None
    return parse_yaml(text, repr(str(path)))
