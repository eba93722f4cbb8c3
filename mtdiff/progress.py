"""Progress of long loops (training steps, sampling batches, feature extraction), for a terminal
or for a log file.

``mode``:
- ``bar``: a tqdm bar on stderr (redrawn in place; right for a terminal);
- ``log``: plain lines on stderr, one every ``interval_s`` seconds or every ``every_fraction``
  of the total, whichever comes first, plus one at the end (right for a Snakemake ``log:``:
  a long job shows where it is, and a short one writes a handful of lines);
- ``none``: nothing;
- ``auto``: ``bar`` when stderr is a terminal, else ``log``.

A log line reads ``train mt_all: 400/750 (53%), 312 images/s, loss=0.0412, elapsed 0:01:05,
ETA 0:00:57``; rate and ETA are tqdm's own (``tqdm.format_meter``), so both modes agree.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from mtdiff.errors import choice_error

PROGRESS_MODES = ("auto", "bar", "log", "none")


def resolve_mode(mode: str | bool) -> str:
    """``True`` / ``False`` (the old ``progress=`` flag) mean ``auto`` / ``none``."""
    if mode is True:
        mode = "auto"
    elif mode is False or mode is None:
        mode = "none"
    if mode not in PROGRESS_MODES:
        raise choice_error("--progress", mode, PROGRESS_MODES)
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return mode


class Progress:
    """``update(n, **postfix)`` after each unit of work; ``close()`` (or ``with``) at the end.
    ``unit_scale``: images per unit (training: the batch size), so log lines give images/s."""

    def __init__(self, total: int, desc: str, *, mode: str | bool = "auto", unit: str = "it", initial: int = 0,
                 interval_s: float = 30.0, every_fraction: float = 0.1, unit_scale: int = 1):
        self.mode = resolve_mode(mode)
        self.total, self.desc, self.unit, self.n, self.unit_scale = total, desc, unit, initial, unit_scale
        self.initial = initial
        self.interval_s, self.every_fraction = interval_s, every_fraction
        self.postfix: dict[str, str] = {}
        self.t0 = self.t_last = time.time()
        self.n_last = initial
        self.closed = False
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=2.0, file=sys.stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1, **postfix) -> None:
        if n == 0 and not postfix:
            return
        self.n += n
        if postfix:
            self.postfix = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in postfix.items()}
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
        elif self.mode == "log":
            now = time.time()
            due_fraction = self.total and (self.n - self.n_last) >= self.every_fraction * self.total
            if now - self.t_last >= self.interval_s or due_fraction:
                self._line(now)

    def line(self, now: float | None = None) -> str:
        """The current state as one line (what log mode prints)."""
        now = time.time() if now is None else now
        elapsed = now - self.t0
        done = self.n - self.initial
        rate = done * self.unit_scale / elapsed if elapsed > 0 else None
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.n}/{self.total}{pct}"]
        if rate is not None:
            unit = "images" if self.unit_scale != 1 else self.unit
            parts.append(f"{rate:.1f} {unit}/s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        parts.append(f"elapsed {tqdm.format_interval(elapsed)}")
        if self.total and done > 0 and self.n < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - self.n) * elapsed / done)}")
        return ", ".join(parts)

    def _line(self, now: float) -> None:
        print(self.line(now), file=sys.stderr, flush=True)
        self.t_last, self.n_last = now, self.n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "log" and self.n != self.n_last:
            self._line(time.time())


def add_progress_argument(parser, default: str = "auto") -> None:
    """``--progress {auto,bar,log,none}`` and the old ``--no-progress`` (= ``--progress none``)."""
    parser.add_argument("--progress", default=default, choices=PROGRESS_MODES,
                        help="auto (bar on a terminal, periodic log lines otherwise) | bar | log | none")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const="none",
                        help="same as --progress none")
