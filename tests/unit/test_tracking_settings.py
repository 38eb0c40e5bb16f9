"""Experiment tracking without a model: the config section, what is sent, the package check, the settings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from star.config import TRACKER_NAMES, build_config
from star.errors import ConfigError
from star.store.runs import RunDir
from star.tracking import BACKENDS, RunTracking, check_installed
from star.tracking.backends import Settings, TensorBoard, _file_store, _path_safe, wait_for_a_fresh_wandb_second
from star.tracking.figures import pixels, round_figures
from star.tracking.values import hyperparameters, round_scalars

ROUNDS = [
    {"round": 0, "labels": 4, "lambda": None, "accuracy": 0.25, "ece": 0.5, "strategy": "random",
     "reliability": [{"lo": 0.0, "hi": 0.5, "count": 2, "confidence": 0.4, "accuracy": 0.5},
                     {"lo": 0.5, "hi": 1.0, "count": 0, "confidence": 0.0, "accuracy": 0.0}]},
    {"round": 1, "labels": 8, "lambda": 0.5, "accuracy": 0.5, "ece": 0.25, "strategy": "pe-dynamic",
     "reliability": [{"lo": 0.0, "hi": 0.5, "count": 1, "confidence": 0.3, "accuracy": 0.0},
                     {"lo": 0.5, "hi": 1.0, "count": 3, "confidence": 0.8, "accuracy": 1.0}]},
]


def test_config_names_are_the_trackers_star_drives() -> None:
    assert TRACKER_NAMES == tuple(BACKENDS)


def test_log_with_takes_a_list_a_name_or_comma_separated_names() -> None:
    assert build_config().tracking.log_with == []
    assert build_config(overrides=["tracking.log_with=[mlflow, wandb]"]).tracking.log_with == ["mlflow", "wandb"]
    assert build_config(overrides=["tracking.log_with=tensorboard"]).tracking.log_with == ["tensorboard"]
    assert build_config(overrides=["tracking.log_with=wandb, tensorboard,wandb"]).tracking.log_with == [
        "wandb", "tensorboard"]
    assert build_config(overrides=["tracking.log_with=null"]).tracking.log_with == []


def test_an_unknown_tracker_is_one_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(overrides=["tracking.log_with=[tensorboard, comet, aim]"])
    message = str(info.value)
    assert "1 problem(s)" in message and "tracking.log_with: unknown tracker 'comet', 'aim'" in message
    assert "choose from tensorboard, mlflow, wandb" in message


def test_hyperparameters_are_the_flat_config_with_plain_values() -> None:
    config = build_config(overrides=["al.rounds=5", "tracking.log_with=[mlflow]"]).model_dump(mode="json")
    params = hyperparameters(config, "/abs/run")
    assert params["al.rounds"] == 5 and params["train.lr"] == 5e-4 and params["al.mc_dropout"] is True
    assert params["al.mc_dropout_p"] == "null" and params["tracking.log_with"] == '["mlflow"]'
    assert params["lora.target_modules"].startswith('["q_proj"')
    assert params["run_dir"] == "/abs/run"
    assert all(isinstance(v, (bool, int, float, str)) for v in params.values())
    assert not any(isinstance(v, dict) for v in params.values())


def test_round_scalars_are_every_finite_number_nested_keys_joined() -> None:
    metrics = {"round": 2, "labels": 12, "lambda": None, "accuracy": 0.5, "strategy": "pe", "eval_mode": "generate",
               "seconds": {"score": 1.5, "label": 0.0, "train": 2.0, "eval": 0.5, "total": 4.0},
               "train": {"steps": 3, "final_loss": float("nan"), "precision": "fp32"},
               "reliability": [{"count": 1}], "flag": True, "machine": {"cpu": "x", "cpu_count": 2, "world": 1},
               "stopping": {"max_uncertainty": 0.7, "stable": {"kappa": 0.9}}}  # a later version's key: logged too
    assert round_scalars(metrics) == {
        "labels": 12, "accuracy": 0.5, "seconds/score": 1.5, "seconds/label": 0.0, "seconds/train": 2.0,
        "seconds/eval": 0.5, "seconds/total": 4.0, "train/steps": 3, "stopping/max_uncertainty": 0.7,
        "stopping/stable/kappa": 0.9}


def test_figures_are_the_learning_curve_and_the_rounds_reliability_diagram() -> None:
    figures = round_figures(ROUNDS)
    assert set(figures) == {"learning_curve", "reliability"}
    image = pixels(figures["learning_curve"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[1] > 300
    assert image.std() > 0  # something is drawn
    assert "round 1" in figures["reliability"].axes[0].get_title()


def test_a_missing_package_is_one_error_naming_each_with_the_pip_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError) as info:
        check_installed(["tensorboard", "mlflow", "wandb"])
    message = str(info.value)
    assert "mlflow needs the mlflow-skinny package" in message and "wandb needs the wandb package" in message
    assert "tensorboard needs" not in message
    assert 'pip install "star-al[tracking]"' in message and "pip install mlflow-skinny wandb" in message
    check_installed([])


def test_settings_default_to_the_run_directory_and_its_output_dir(tmp_path) -> None:
    config = build_config({"output_dir": "runs/x", "tracking": {"log_with": ["tensorboard"]}})
    settings = Settings.resolve(config.tracking, config.output_dir, tmp_path / "x")
    assert settings.logging_dir == (tmp_path / "x" / "tracking").resolve() and settings.own_dir
    assert settings.run_name == "runs/x" and settings.project == "star"
    shared = build_config({"tracking": {"logging_dir": str(tmp_path / "tb"), "run_name": "cmp/pe/seed-0"}})
    settings = Settings.resolve(shared.tracking, shared.output_dir, tmp_path / "x")
    assert settings.logging_dir == (tmp_path / "tb").resolve() and not settings.own_dir
    assert settings.run_name == "cmp/pe/seed-0"


def test_a_run_name_becomes_a_relative_folder_inside_a_shared_logging_dir() -> None:
    assert str(_path_safe("runs/cmp/pe/seed-0")) == "runs/cmp/pe/seed-0"
    assert str(_path_safe("/abs/../run")) == "abs/run"
    assert str(_path_safe("..")) == "run"


def test_file_stores_are_told_apart_from_servers_and_databases() -> None:
    assert _file_store("file:///tmp/mlruns") and _file_store("mlruns") and _file_store("/tmp/mlruns")
    assert not _file_store("http://localhost:5000") and not _file_store("https://mlflow.example.com")
    assert not _file_store("sqlite:///mlflow.db") and not _file_store("databricks")


def test_other_processes_and_runs_without_trackers_log_nothing(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    config = build_config({"output_dir": str(run.path), "tracking": {"log_with": ["tensorboard"]}})
    for tracking in (RunTracking.start(config, run, enabled=False), RunTracking.start(build_config(), run)):
        assert tracking.backends == []
        tracking.sync()
        tracking.finish(ok=True)
    assert list(run.path.iterdir()) == []


def test_a_tracker_that_cannot_start_is_one_error_and_leaves_no_state(tmp_path, monkeypatch) -> None:
    def refused(self) -> None:
        raise PermissionError("logging dir not writable")

    monkeypatch.setattr(TensorBoard, "start", refused)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    config = build_config({"output_dir": str(run.path), "tracking": {"log_with": ["tensorboard"]}})
    with pytest.raises(ConfigError) as info:
        RunTracking.start(config, run)
    assert "tensorboard could not start: PermissionError: logging dir not writable" in str(info.value)
    assert f"star run --resume {run.path}" in str(info.value)
    assert "tensorboard" not in (run.tracking_path.read_text() if run.tracking_path.exists() else "")
    assert not Path(tmp_path / "run" / "tracking").exists()


def test_a_wandb_resume_within_the_crashed_start_second_waits_for_the_next(tmp_path) -> None:
    """W&B stamps a run's folder with its start second; a resume in the same second would write into it."""
    import time

    while time.time() % 1.0 > 0.5:  # leave the stamp below half a second old, so the wait is observable
        time.sleep(0.05)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    (tmp_path / f"offline-run-{stamp}-abc").mkdir()
    wait_for_a_fresh_wandb_second(tmp_path, "other")  # another run's folder: no wait
    assert time.strftime("%Y%m%d_%H%M%S") == stamp
    wait_for_a_fresh_wandb_second(tmp_path, "abc")
    assert time.strftime("%Y%m%d_%H%M%S") > stamp

