"""Configuration: one ConfigError naming every bad field; YAML in and out; the CLI's exit codes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from star.cli import main, overrides_from_args
from star.config import RunConfig, build_config, dump_config, load_config
from star.errors import ConfigError


def config_error(*overrides: str, data: dict | None = None) -> str:
    """The text of the single ConfigError that validating `overrides` raises."""
    with pytest.raises(ConfigError) as info:
        build_config(data, list(overrides))
    return str(info.value)


# --- defaults and valid overrides -----------------------------------------------------------


def test_defaults_validate() -> None:
    config = build_config()
    assert isinstance(config, RunConfig)
    assert config == load_config()
    need = config.al.initial + (config.al.rounds - 1) * config.al.query
    assert config.task.pool_size >= need
    assert config.train.weight_decay_b == 0.5 and config.train.weight_decay_a == 0.0
    assert config.al.strategy == "pe-dynamic" and config.al.schedule == "linear"


def test_overrides_are_parsed_as_yaml_values() -> None:
    config = build_config(overrides=["al.rounds=3", "lora.alpha=8.5", "al.mc_dropout=false", "al.score_subsample=null",
                                     "lora.target_modules=[q_proj, v_proj]", "model.name=./my-model"])
    assert config.al.rounds == 3 and config.lora.alpha == 8.5 and config.al.mc_dropout is False
    assert config.al.score_subsample is None and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.model.name == "./my-model"


def test_build_config_does_not_mutate_its_input() -> None:
    data = {"al": {"rounds": 2}}
    build_config(data, ["al.rounds=3", "al.query=5"])
    assert data == {"al": {"rounds": 2}}


def test_overrides_win_over_data() -> None:
    config = build_config({"al": {"rounds": 2, "query": 4}}, ["al.rounds=3"])
    assert config.al.rounds == 3 and config.al.query == 4


# --- one ConfigError naming the field ------------------------------------------------------------


@pytest.mark.parametrize(("override", "field"), [
    ("al.bogus=1", "al.bogus"),
    ("bogus=1", "bogus"),
    ("al.rounds=abc", "al.rounds"),
    ("lora.r=two", "lora.r"),
    ("al.mc_dropout=maybe", "al.mc_dropout"),
    ("al.query=-1", "al.query"),
    ("al.initial=0", "al.initial"),
    ("al.mc_passes=0", "al.mc_passes"),
    ("train.lr=-0.1", "train.lr"),
    ("lora.dropout=1.0", "lora.dropout"),
    ("al.strategy=bogus", "al.strategy"),
    ("al.schedule=sigmoid", "al.schedule"),
    ("task.name=mnist", "task.name"),
])
def test_a_bad_field_is_one_config_error_naming_it(override: str, field: str) -> None:
    message = config_error(override)
    assert f"{field}:" in message
    assert "1 problem(s)" in message


def test_unknown_strategy_and_schedule_list_the_choices() -> None:
    assert "pe-dynamic" in config_error("al.strategy=bogus")
    assert "cosine" in config_error("al.schedule=sigmoid")


def test_pool_smaller_than_the_budget_is_a_config_error() -> None:
    # initial 10 + (rounds 3 - 1) * query 10 = 30 > pool 29
    message = config_error("task.pool_size=29", "al.initial=10", "al.query=10", "al.rounds=3")
    assert "task.pool_size" in message and "30" in message
    build_config(overrides=["task.pool_size=30", "al.initial=10", "al.query=10", "al.rounds=3"])  # exactly enough


def test_several_bad_fields_are_all_named_in_one_error() -> None:
    message = config_error("al.rounds=abc", "lora.r=-1", "bogus=1", "al.strategy=nope", "train.epochs=0")
    for field in ("al.rounds", "lora.r", "bogus", "al.strategy", "train.epochs"):
        assert f"{field}:" in message, field
    assert "5 problem(s)" in message


def test_unknown_section_data_is_named() -> None:
    assert "al.bogus" in config_error(data={"al": {"bogus": 3}})


@pytest.mark.parametrize("bad", ["al.rounds", "=3", ""])
def test_malformed_override_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        build_config(overrides=[bad])


# --- YAML files ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("al: {rounds: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_bad_field_in_a_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("al:\n  rounds: many\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "al.rounds" in str(info.value)


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path) == build_config()


def test_dump_config_round_trips_through_load_config(tmp_path: Path) -> None:
    config = build_config(overrides=["seed=7", "al.strategy=entropy-subtract", "al.schedule=cosine",
                                     "al.schedule_horizon=5", "al.score_subsample=null", "lora.r=4",
                                     "lora.target_modules=[q_proj, v_proj]", "train.weight_decay_b=0.25",
                                     "task.name=jsonl", "model.name=./m"])
    # Strings YAML would otherwise read as booleans / numbers / null must survive the trip.
    config = build_config({**config.model_dump(), "task": {**config.task.model_dump(), "choices": ["yes", "no", "1", "null"]}})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    loaded = load_config(path)
    assert loaded == config
    assert loaded.task.choices == ["yes", "no", "1", "null"]
    assert dump_config(loaded) == dump_config(config)
    # File values combine with overrides on load.
    assert load_config(path, ["al.rounds=2"]).al.rounds == 2


# --- command line ----------------------------------------------------------------------------


def test_overrides_from_args_accepts_both_forms() -> None:
    assert overrides_from_args(["--al.rounds", "3", "lora.r=4", "--seed=1", "--seed", "-1"]) == [
        "al.rounds=3", "lora.r=4", "seed=1", "seed=-1"]
    assert overrides_from_args([]) == []


@pytest.mark.parametrize("args", [["--al.rounds"], ["--al.rounds", "--lora.r", "4"], ["stray"]])
def test_overrides_from_args_rejects_malformed(args: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        overrides_from_args(args)
    assert args[0] in str(info.value) or args[0].lstrip("-") in str(info.value)


def test_cli_config_prints_resolved_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--al.rounds", "3", "lora.r=4"]) == 0
    out = capsys.readouterr().out
    import yaml

    data = yaml.safe_load(out)
    assert data["al"]["rounds"] == 3 and data["lora"]["r"] == 4


def test_cli_unknown_option_exits_2_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, star_log_handlers) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--al.bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "al.bogus" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written for an invalid config


def test_cli_bad_override_syntax_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--al.rounds"]) == 2
    assert "--al.rounds" in capsys.readouterr().err


def test_cli_missing_model_folder_exits_2_quickly(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, star_log_handlers) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    code = main(["run", "-q", "model.name=./does-not-exist", f"output_dir={tmp_path / 'run'}"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2
    assert "model.name" in err and "does-not-exist" in err
    assert elapsed < 20


def test_cli_missing_model_folder_leaves_no_run_behind(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, star_log_handlers) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", "-q", "model.name=./does-not-exist", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.name" in err, err  # the same problem is reported again, not 'already holds a run'
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.fixture
def star_log_handlers():
    """Restore the 'star' logger's handlers after the test (closing any the test left open)."""
    import logging

    logger = logging.getLogger("star")
    before = list(logger.handlers)
    yield logger
    for h in logger.handlers[:]:
        if h not in before:
            logger.removeHandler(h)
            h.close()


def test_cli_run_does_not_leak_a_log_handler(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, star_log_handlers) -> None:
    import logging

    monkeypatch.chdir(tmp_path)
    before = list(star_log_handlers.handlers)
    assert main(["run", "-q", "model.name=./does-not-exist", f"output_dir={tmp_path / 'run'}"]) == 2
    capsys.readouterr()
    leaked = [h for h in star_log_handlers.handlers if h not in before and isinstance(h, logging.FileHandler)]
    assert leaked == []


def test_a_stored_config_missing_a_later_field_keeps_its_old_behaviour(tmp_path):
    """A run's config.yaml written before train.precision existed was trained in fp32."""
    from star.config import dump_config, load_stored_config

    stored = yaml.safe_load(dump_config(build_config()))
    del stored["train"]["precision"], stored["al"]["precision"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(stored))
    assert load_stored_config(path).train.precision == "fp32"
    assert load_config(path).train.precision == "auto"  # a user's config gets today's default
    stored["train"]["precision"] = "bf16"
    path.write_text(yaml.safe_dump(stored))
    assert load_stored_config(path).train.precision == "bf16"  # a recorded value always wins


def test_annotator_names_are_the_registry():
    """config validates al.annotator against a plain tuple (it sits below annotation); it must match the registry."""
    from star.annotation.registry import ANNOTATORS
    from star.config import ANNOTATOR_NAMES

    assert set(ANNOTATOR_NAMES) == set(ANNOTATORS)


def test_labels_needed_and_lambda_come_from_the_config():
    cfg = build_config({"al": {"initial": 10, "query": 5, "rounds": 4, "schedule": "linear"}})
    assert cfg.al.labels_needed == 10 + 3 * 5
    assert [cfg.al.lambda_at(t) for t in range(3)] == pytest.approx([0.75, 0.5, 0.25])  # 1 - (t + 1) / T, T = rounds
