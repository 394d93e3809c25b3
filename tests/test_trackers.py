"""report_to: the same numbers as metrics.jsonl reach an experiment tracker, offline, in the run folder; a tracker
whose package is missing fails before any work, naming the extra to install."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

# What a user's shell may set that would send a tracker elsewhere; each test clears it, so that the trainer's own
# defaults are what is tested.
TRACKER_ENV = ["WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "TRACKIO_DIR", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL",
               "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_DISABLE_TELEMETRY"]


def _train_two_iterations(tmp_path, monkeypatch, tracker: str, **settings):
    """2 iterations of `tiny` on `lights` reporting to `tracker`, from an empty working folder, which must stay empty
    (the tracker's files belong in the run folder). Returns the run folder and metrics.jsonl's rows."""
    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    config = load_config(None, {"env": "lights", "model": "tiny", "iterations": 2, "tasks_per_iteration": 1,
                                "group_size": 2, "max_turns": 2, "max_new_tokens": 4, "report_to": tracker,
                                "checkpoint_every": 0, "output_dir": str(tmp_path / "run"), **settings})
    run_dir = train(config, progress=False)
    assert not any((tmp_path / "cwd").iterdir()), f"{tracker} wrote into the working folder"
    assert not any(name in os.environ for name in TRACKER_ENV), "the run's tracker defaults outlived it"
    return run_dir, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _numbers(row: dict) -> dict:
    """The values of a metrics.jsonl row that the trainer sends to a tracker."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_tensorboard_receives_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, rows = _train_two_iterations(tmp_path, monkeypatch, "tensorboard")
    events = list((run_dir / "trackers").rglob("events.out.tfevents.*"))
    assert events, "no event file written"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    logged = accumulator.Scalars("mean_turns")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx([row["mean_turns"] for row in rows])


def test_wandb_receives_the_metrics_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    # WANDB_MODE is left to the trainer; should its offline default go, a dead server and no key keep the run here.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")   # no crash reports either
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))   # not the user's settings
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))   # wandb-core's own logs, not the home's

    run_dir, rows = _train_two_iterations(tmp_path, monkeypatch, "wandb")
    (log,) = (run_dir / "trackers" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's own reader of a run's transaction log: one JSON record a line.
    records = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                             capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL, timeout=120)
    history = [r["history"] for r in map(json.loads, records.stdout.splitlines()) if r["type"] == "history"]
    assert [h["step"]["num"] for h in history] == [1, 2]
    for h, row in zip(history, rows):
        assert {k: h["item"].get(k) for k in _numbers(row)} == pytest.approx(_numbers(row), nan_ok=True)


def test_trackio_receives_the_metrics_in_the_run_folder(tmp_path, monkeypatch):
    # Not importorskip: trackio fixes its folder (TRACKIO_DIR) when first imported, which must be during the run.
    if importlib.util.find_spec("trackio") is None:
        pytest.skip("trackio is not installed")

    run_dir, rows = _train_two_iterations(tmp_path, monkeypatch, "trackio")
    from trackio.sqlite_storage import SQLiteStorage

    database = SQLiteStorage.get_project_db_path("turnrl")
    assert database.parent == (run_dir / "trackers" / "trackio").resolve(), "trackio was imported before the run"
    assert database.exists()
    (name,) = SQLiteStorage.get_runs("turnrl")
    logged = SQLiteStorage.get_logs("turnrl", name)
    assert [entry["step"] for entry in logged] == [1, 2]
    for entry, row in zip(logged, rows):
        assert {k: entry.get(k) for k in _numbers(row)} == pytest.approx(_numbers(row), nan_ok=True)


def test_mlflow_receives_the_metrics_and_the_evaluations(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("DO_NOT_TRACK", "true")   # besides the trainer's MLFLOW_DISABLE_TELEMETRY: no usage reports
    # An extra split names its evaluation "zero_shot@train", a character MLflow refuses in a metric's name.
    run_dir, rows = _train_two_iterations(tmp_path, monkeypatch, "mlflow", eval_episodes=1,
                                          eval_extra_splits=["train"])
    database = run_dir / "trackers" / "mlflow.db"
    assert database.exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{database.resolve()}")
    (run,) = client.search_runs([client.get_experiment_by_name("turnrl").experiment_id])
    for key in _numbers(rows[0]):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == [1, 2], key
        assert [m.value for m in logged] == pytest.approx([row[key] for row in rows], nan_ok=True), key
    evals = json.loads((run_dir / "eval.json").read_text())
    assert set(evals) == {"zero_shot", "zero_shot@train", "after_rl", "after_rl@train"}
    for phase, e in evals.items():
        (logged,) = client.get_metric_history(run.info.run_id, f"eval_{phase.replace('@', ':')}_success_rate")
        assert (logged.step, logged.value) == (2, e["success_rate"])


@pytest.mark.parametrize("name", ["wandb", "trackio", "mlflow", "tensorboard"])
def test_a_missing_tracker_package_is_named(name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ConfigError, match=rf"pip install 'turnrl\[{name}\]'"):
        load_config(None, {"report_to": name})


def test_an_unknown_tracker_names_the_choices():
    with pytest.raises(ConfigError, match="none, tensorboard, wandb, trackio, mlflow"):
        load_config(None, {"report_to": "comet"})
