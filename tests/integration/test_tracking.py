"""Experiment tracking on the tiny model: what TensorBoard, MLflow and W&B (offline) hold after a run, read
back with each tool's own reader; a resumed run logs into the same tracker runs, each round once, at step = round."""

from __future__ import annotations

import copy
import glob
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from star import loop
from star.store.runs import RunDir
from star.tracking.backends import TensorBoard
from star.tracking.session import RunTracking, read_state

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")

from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ALL = ["tensorboard", "mlflow", "wandb"]


class Crash(Exception):
    """Stands in for a kill at a chosen point."""


def _isolate(mp: pytest.MonkeyPatch, folder: Path) -> None:
    """W&B offline, its files and settings under `folder`; no tracker setting of the machine leaks in."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS", "MLFLOW_ALLOW_FILE_STORE",
                 "WANDB_RUN_ID", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RESUME", "WANDB_NAME", "WANDB_API_KEY"):
        mp.delenv(name, raising=False)
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the tests
    mp.setenv("WANDB_SILENT", "true")
    for name, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_CONFIG_DIR", "wandb-config"), ("WANDB_CACHE_DIR", "wandb-cache"),
                      ("WANDB_DATA_DIR", "wandb-data")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        mp.setenv(name, str(folder / sub))


def _config(settings: dict, folder: Path, log_with: list[str]) -> dict:
    cfg = {**copy.deepcopy(settings), "output_dir": str(folder / "run")}
    cfg["tracking"] = {"log_with": log_with, "project": "star-test",
                       "mlflow_tracking_uri": (folder / "mlruns").as_uri()}  # a local file store
    return cfg


@pytest.fixture(scope="module")
def tracked(tiny_run_settings: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, RunDir]]:
    """One finished 3-round run logging to all three trackers: (its config, its run directory)."""
    folder = tmp_path_factory.mktemp("tracked")
    cfg = _config(tiny_run_settings, folder, ALL)
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, folder)
        loop.run(cfg, show_progress=False)
        yield cfg, RunDir(cfg["output_dir"])


# --- reading each tracker back ----------------------------------------------------------------------


def _tensorboard(run: RunDir) -> EventAccumulator:
    events = EventAccumulator(read_state(run)["tensorboard"]["logging_dir"], size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def _mlflow(cfg: dict, run: RunDir) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=cfg["tracking"]["mlflow_tracking_uri"])
    return client, read_state(run)["mlflow"]["run_id"]


def _wandb_records(path: str) -> Iterator[object]:
    """The records of a W&B transaction log (run-<id>.wandb): a 7-byte W&B header, then LevelDB-style log
    blocks of 32 KiB, each record a 7-byte header (crc32, length, type) and a piece of a protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    data, pos, piece = Path(path).read_bytes(), 7, b""
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += 32768 - pos % 32768
            continue
        piece += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            piece = b""
            yield record


def _wandb(run: RunDir) -> tuple[list[dict], dict, list[str]]:
    """The W&B run of `run`: its history rows (every offline segment, in order), its config, its segments' folders."""
    state = read_state(run)["wandb"]
    segments = sorted(glob.glob(os.path.join(state["dir"], "wandb", f"offline-run-*-{state['run_id']}")))
    history, config = [], {}
    for folder in segments:
        for record in _wandb_records(os.path.join(folder, f"run-{state['run_id']}.wandb")):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
            elif kind == "config":
                config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    return history, config, segments


# --- a run with all three ----------------------------------------------------------------------------


def test_tensorboard_holds_every_round_at_its_step(tracked) -> None:
    _, run = tracked
    metrics, events = run.metrics(), _tensorboard(run)
    for key in ("accuracy", "ece", "labels", "seconds/score", "seconds/train", "seconds/total", "train/final_loss"):
        path = key.split("/")
        values = [m[path[0]] if len(path) == 1 else m[path[0]][path[1]] for m in metrics]
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(t, pytest.approx(v, rel=1e-6))
                                                                   for t, v in enumerate(values)], key
    assert [e.step for e in events.Scalars("lambda")] == [1, 2]  # round 0 has no lambda
    for name in ("figures/learning_curve", "figures/reliability"):
        images = events.Images(name)
        assert [e.step for e in images] == [0, 1, 2] and images[0].width > 100 and images[0].height > 100
    hparams = glob.glob(os.path.join(read_state(run)["tensorboard"]["logging_dir"], "*", "hparams.yml"))
    assert len(hparams) == 1
    params = yaml.safe_load(Path(hparams[0]).read_text())
    assert params["al.rounds"] == 3 and params["tracking.log_with"] == json.dumps(ALL)
    assert params["run_dir"] == str(run.path.resolve())
    assert read_state(run)["tensorboard"]["logging_dir"] == str(run.path.resolve() / "tracking" / "tensorboard")


def test_mlflow_holds_params_metrics_per_step_and_figures(tracked) -> None:
    cfg, run = tracked
    client, run_id = _mlflow(cfg, run)
    found = client.get_run(run_id)
    assert found.info.status == "FINISHED" and found.info.run_name == cfg["output_dir"]
    assert client.get_experiment(found.info.experiment_id).name == "star-test"
    params = found.data.params
    assert params["al.rounds"] == "3" and params["al.strategy"] == "pe-dynamic" and params["task.path"] == "null"
    assert params["run_dir"] == str(run.path.resolve())
    metrics = run.metrics()
    for key, values in (("accuracy", [m["accuracy"] for m in metrics]), ("labels", [4, 8, 12]),
                        ("seconds/eval", [m["seconds"]["eval"] for m in metrics])):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == [(t, pytest.approx(v)) for t, v in enumerate(values)], key
    figures = {a.path for a in client.list_artifacts(run_id, "figures/round-2")}
    assert figures == {"figures/round-2/learning_curve.png", "figures/round-2/reliability.png"}


def test_wandb_offline_files_hold_config_and_history(tracked) -> None:
    _, run = tracked
    history, config, segments = _wandb(run)
    assert len(segments) == 1 and read_state(run)["wandb"]["dir"] == os.environ["WANDB_DIR"]  # WANDB_DIR is respected
    assert [row["_step"] for row in history] == [0, 1, 2]
    assert [row["accuracy"] for row in history] == pytest.approx([m["accuracy"] for m in run.metrics()])
    assert [row["labels"] for row in history] == [4, 8, 12]
    assert all(row["figures/learning_curve/_type"] == "image-file" for row in history)
    assert config["al.rounds"] == 3 and config["run_dir"] == str(run.path.resolve())
    media = glob.glob(os.path.join(segments[0], "files", "media", "images", "figures", "*.png"))
    assert len(media) == 6  # two figures a round


# --- resume ------------------------------------------------------------------------------------------


def test_resume_logs_into_the_same_tracker_runs_each_round_once(tiny_run_settings, tmp_path, monkeypatch) -> None:
    """Killed after round 1's metrics.json landed but before it was sent: the resume sends round 1, then round 2,
    into the same TensorBoard folder, MLflow run and W&B run."""
    _isolate(monkeypatch, tmp_path)
    cfg = _config(tiny_run_settings, tmp_path, ALL)
    original = RunTracking.sync

    def killed_after_round_1(self: RunTracking) -> None:
        if len(self.run.finished_rounds()) == 2:
            raise Crash("killed before round 1 was sent")
        original(self)

    with monkeypatch.context() as m:
        m.setattr(RunTracking, "sync", killed_after_round_1)
        with pytest.raises(Crash):
            loop.run(cfg, show_progress=False)
    run = RunDir(cfg["output_dir"])
    first = read_state(run)
    assert {name: first[name]["last_round"] for name in ALL} == {name: 0 for name in ALL}
    client, run_id = _mlflow(cfg, run)
    assert client.get_run(run_id).info.status == "FAILED"

    loop.run(resume=cfg["output_dir"], show_progress=False)
    state = read_state(run)
    assert {name: state[name]["last_round"] for name in ALL} == {name: 2 for name in ALL}
    assert state["mlflow"]["run_id"] == run_id and state["wandb"]["run_id"] == first["wandb"]["run_id"]
    assert state["tensorboard"]["logging_dir"] == first["tensorboard"]["logging_dir"]

    assert [e.step for e in _tensorboard(run).Scalars("accuracy")] == [0, 1, 2]
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "accuracy")) == [0, 1, 2]
    history, config, segments = _wandb(run)
    assert len(segments) == 2 and [row["_step"] for row in history] == [0, 1, 2]
    assert config["al.rounds"] == 3
    assert len(glob.glob(os.path.join(state["tensorboard"]["logging_dir"], "*", "hparams.yml"))) == 1  # config once


def test_a_failing_tracker_never_stops_the_run_and_the_resume_catches_up(tiny_run_settings, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    _isolate(monkeypatch, tmp_path)
    cfg = _config(tiny_run_settings, tmp_path, ["tensorboard"])
    original = TensorBoard.log_round

    def down_from_round_1(self, step, scalars, figures):
        if step >= 1:
            raise ConnectionError("tracking server unreachable")
        original(self, step, scalars, figures)

    with monkeypatch.context() as m:
        m.setattr(TensorBoard, "log_round", down_from_round_1)
        metrics = loop.run(cfg, show_progress=False)
    assert [r["round"] for r in metrics] == [0, 1, 2]  # the run finished
    assert "tensorboard failed to log round 1 (ConnectionError" in capsys.readouterr().err
    run = RunDir(cfg["output_dir"])
    assert read_state(run)["tensorboard"]["last_round"] == 0
    assert [e.step for e in _tensorboard(run).Scalars("accuracy")] == [0]

    loop.run(resume=cfg["output_dir"], show_progress=False)  # a finished run: only what the tracker missed is sent
    assert [e.step for e in _tensorboard(run).Scalars("accuracy")] == [0, 1, 2]
    assert read_state(run)["tensorboard"]["last_round"] == 2
    streams = sorted(Path(read_state(run)["tensorboard"]["logging_dir"]).rglob("events.out.tfevents.*"))
    loop.run(resume=cfg["output_dir"], show_progress=False)  # nothing left to send: no tracker is even started
    assert sorted(Path(read_state(run)["tensorboard"]["logging_dir"]).rglob("events.out.tfevents.*")) == streams


# --- setup ---------------------------------------------------------------------------------------------


def test_a_missing_tracker_package_is_one_error_before_any_model_loads(tiny_run_settings, tmp_path, monkeypatch) -> None:
    from star.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails, as when it is not installed

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(loop.experiment, "load_for_engine", no_model)
    cfg = _config(tiny_run_settings, tmp_path, ["tensorboard", "wandb"])
    with pytest.raises(ConfigError) as info:
        loop.run(cfg, show_progress=False)
    message = str(info.value)
    assert "wandb needs the wandb package" in message and "tensorboard" not in message.split("hint")[0]
    assert 'pip install "star-al[tracking]"' in message and "pip install wandb" in message
    assert not Path(cfg["output_dir"]).exists()


def test_only_the_main_process_logs(tiny_run_settings, tmp_path, monkeypatch) -> None:
    """`star run --num-processes 2` (accelerate DDP on CPU): one TensorBoard event stream, one MLflow run,
    every round once."""
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate CLI not installed")
    _isolate(monkeypatch, tmp_path)
    cfg = _config(tiny_run_settings, tmp_path, ["tensorboard", "mlflow"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "star", "run", "--quiet", "--config", str(config_file),
                           "--num-processes", "2"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    run = RunDir(cfg["output_dir"])
    assert "2 processes (DDP)" in run.log_path.read_text()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read the file store here (the run's processes set it)
    logdir = Path(read_state(run)["tensorboard"]["logging_dir"])
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
    assert [e.step for e in _tensorboard(run).Scalars("accuracy")] == [0, 1, 2]
    client, run_id = _mlflow(cfg, run)
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    assert sorted(m.step for m in client.get_metric_history(run_id, "accuracy")) == [0, 1, 2]
