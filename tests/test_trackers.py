"""report_to: the same numbers as metrics.jsonl reach an experiment tracker, offline, in the run folder; a tracker
whose package is missing fails before any work, naming the extra to install."""

from __future__ import annotations

import importlib.util
import json

import pytest

from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_receives_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_config(None, {"env": "lights", "model": "tiny", "iterations": 2, "tasks_per_iteration": 1,
                                "group_size": 2, "max_turns": 2, "max_new_tokens": 4, "report_to": "tensorboard",
                                "checkpoint_every": 0, "output_dir": str(tmp_path / "run")})
    run_dir = train(config, progress=False)
    events = list((run_dir / "trackers").rglob("events.out.tfevents.*"))
    assert events, "no event file written"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = accumulator.Scalars("mean_turns")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx([row["mean_turns"] for row in rows])


@pytest.mark.parametrize("name", ["wandb", "trackio", "mlflow", "tensorboard"])
def test_a_missing_tracker_package_is_named(name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ConfigError, match=rf"pip install 'turnrl\[{name}\]'"):
        load_config(None, {"report_to": name})


def test_an_unknown_tracker_names_the_choices():
    with pytest.raises(ConfigError, match="none, tensorboard, wandb, trackio, mlflow"):
        load_config(None, {"report_to": "comet"})
