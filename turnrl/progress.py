"""Progress of long phases (rollouts, updates, evaluations): a live rich bar on a terminal, plain lines
every `interval` seconds otherwise (CI logs), nothing when disabled.

    progress = PhaseProgress()
    with progress.phase("rollout", total=max_turns) as update:
        update(completed=3, live=12, tok_s=41.0)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _fields_text(fields: dict) -> str:
    return "  ".join(f"{key.replace('_', ' ')} {value:.1f}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in fields.items())


class PhaseProgress:
    def __init__(self, enabled: bool = True, interval: float = 30.0, stream=None):
        self.enabled = enabled
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.live = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    @contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """Yields `update(completed=None, **fields)`; `completed` counts steps of `total`."""
        if not self.enabled:
            yield lambda completed=None, **fields: None
            return
        if self.live:
            yield from self._rich_phase(name, total)
        else:
            yield from self._plain_phase(name, total)

    def _rich_phase(self, name: str, total: int | None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=console, transient=True) as bar:
            task = bar.add_task(name, total=total, info="")

            def update(completed=None, **fields):
                bar.update(task, completed=completed, info=_fields_text(fields))

            yield update

    def _plain_phase(self, name: str, total: int | None):
        start = last = time.perf_counter()
        state: dict = {"completed": 0, "fields": {}}
        printed: list = [None]   # the (completed, fields) of the last line printed

        def show() -> None:
            done = f"{state['completed']}/{total}" if total else f"{state['completed']}"
            extra = _fields_text(state["fields"])
            print(f"[{name}] {done}  {time.perf_counter() - start:.0f}s  {extra}".rstrip(), file=self.stream,
                  flush=True)
            printed[0] = (state["completed"], dict(state["fields"]))

        def update(completed=None, **fields):
            nonlocal last
            if completed is not None:
                state["completed"] = completed
            state["fields"].update(fields)
            now = time.perf_counter()
            if now - last >= self.interval:
                show()
                last = now

        yield update
        # A long phase also reports where it ended, unless its last line already said so.
        if time.perf_counter() - start >= self.interval and printed[0] != (state["completed"], state["fields"]):
            show()
