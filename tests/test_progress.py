"""Progress reporting: plain periodic lines when the stream is not a terminal, nothing when disabled."""

from __future__ import annotations

import io

from turnrl.progress import PhaseProgress


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = PhaseProgress(interval=0.0, stream=stream)
    assert not progress.live
    with progress.phase("rollout", total=3) as update:
        update(completed=1, live=12, tok_s=41.25)
        update(completed=2, live=5)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[rollout] 1/3") and "live 12" in lines[0] and "tok s 41.2" in lines[0]
    assert lines[1].startswith("[rollout] 2/3") and "live 5" in lines[1]
    assert len(lines) == 2   # the last line already said where the phase ended
    with progress.phase("eval", total=2) as update:
        update(completed=1)
        progress.interval = 3600.0
        update(completed=2)
        progress.interval = 0.0
    assert stream.getvalue().splitlines()[-1].startswith("[eval] 2/2")   # where the phase ended


def test_quiet_between_intervals_and_when_disabled():
    stream = io.StringIO()
    with PhaseProgress(interval=3600.0, stream=stream).phase("update", total=4) as update:
        for k in range(4):
            update(completed=k)
    assert stream.getvalue() == ""
    with PhaseProgress(enabled=False, interval=0.0, stream=stream).phase("update", total=4) as update:
        update(completed=1)
    assert stream.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_live_bar_on_a_terminal():
    stream = _Terminal()
    progress = PhaseProgress(stream=stream)
    assert progress.live
    with progress.phase("update", total=2) as update:
        update(completed=1, skipped=0)
        update(completed=2, skipped=1)
    assert "update" in stream.getvalue()   # drawn (rich's transient bar is erased with control codes after)
