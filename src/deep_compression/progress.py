"""Progress that reaches the user whether stderr is a terminal or a log file.

On a terminal, a tqdm bar. Anywhere else (a CI log, ``nohup``, a pipe), tqdm's
carriage-return redraws would pile up on one line and show nothing until the end, so a
plain line is printed instead at most every :data:`LOG_INTERVAL` seconds (and at the
end): ``round 3/12 retrain 2/4: 240/469 batch (51%), 12 s, loss=0.0431 acc=0.9874``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

from deep_compression.fileio import is_writer

__all__ = ["LOG_INTERVAL", "progress_bar", "LogBar", "log"]

T = TypeVar("T")

# Seconds between two progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


def log(message: str) -> None:
    """One progress line on stderr, above any live bar (results go to stdout); under
    torchrun, from rank 0 only."""
    if is_writer():
        tqdm.write(message, file=sys.stderr)


class LogBar:
    """The part of tqdm's interface the project uses, printing plain lines to stderr."""

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        interval: float = LOG_INTERVAL,
        stream: Any = None,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else _len(iterable)
        self.unit = unit
        self.interval = interval
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self.start = time.monotonic()
        self.last = self.start

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                self._print(now)

    def set_postfix(self, **values: object) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.last != self.start:  # a line was printed: say that it finished
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        line = f"{self.desc}: {done} {self.unit}{pct}, {now - self.start:.0f} s{tail}"
        print(line, file=self.stream or sys.stderr, flush=True)


class _Silent:
    def __init__(self, iterable: Iterable[T]) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[T]:
        return iter(self.iterable)

    def set_postfix(self, **values: object) -> None:
        pass

    def close(self) -> None:
        pass


def _len(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(
    iterable: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    enabled: bool = True,
    unit: str = "it",
) -> Any:
    """Iterate ``iterable`` with progress: a tqdm bar on a terminal, log lines elsewhere.

    The result supports ``set_postfix(**values)`` and ``close()`` as tqdm does.
    """
    if not enabled:
        return _Silent(iterable)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, leave=False, unit=unit)
    return LogBar(iterable, desc=desc, total=total, unit=unit)
