"""Configs in and out: YAML files, dotted command-line overrides, stored runs' configs, and the README's
reference table generated from the sections."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from star.config.base import _Section
from star.config.run import RunConfig
from star.config.services import LLMAnnotatorConfig
from star.errors import ConfigError


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}): {err.error_count()} problem(s)"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {field}: unknown option (value {e['input']!r}); remove it or check its spelling")
        elif e["type"] == "missing":
            lines.append(f"  - {field}: missing")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  - {field}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'al.rounds=3' -> (['al', 'rounds'], 3); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"bad override {text!r}", hint="write overrides as section.option=value, e.g. al.rounds=3")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().lstrip("-").split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted override in a nested dict (unknown keys are caught by validation)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping from `path`, with a clear error naming the file when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", hint="pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
    return data


def build_config(data: dict[str, Any] | None = None, overrides: list[str] | None = None, source: str = "arguments") -> RunConfig:
    """Validate a nested dict (plus overrides) into a RunConfig, or raise one ConfigError."""
    merged = apply_overrides(copy.deepcopy(dict(data or {})), list(overrides or []))
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source), hint="see the configuration reference in README.md") from None


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Config from an optional YAML file plus dotted overrides, fully validated."""
    data = read_yaml(path) if path is not None else {}
    source = f"{path}" if path is not None else "defaults"
    if overrides:
        source += " + command-line overrides"
    return build_config(data, overrides, source)


# Fields added after runs were first written whose default changed what a run does, with the
# behaviour before them. A stored config (a run's config.yaml, a grid's base_config) that lacks
# one was run that way, so resuming or re-checking it must not switch to the new default.
STORED_LEGACY: dict[tuple[str, str], Any] = {("train", "precision"): "fp32", ("al", "precision"): "fp32",
                                             ("eval", "mode"): "generate", ("al", "score_from_generation"): False,
                                             ("task", "option_style"): "letter"}


def with_stored_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of stored config data with `STORED_LEGACY` filled in where a field is missing."""
    out = copy.deepcopy(data)
    if not isinstance(out, dict):
        return out
    for (section, key), value in STORED_LEGACY.items():
        node = out.get(section)
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return out


def load_stored_config(path: str | os.PathLike[str]) -> RunConfig:
    """The config a run directory recorded, read as it was run (see `STORED_LEGACY`)."""
    return build_config(with_stored_defaults(read_yaml(path)), source=str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, loadable by `load_config`.

    The `llm_annotator` section is written only when the run uses it or it was set, so the
    config.yaml of other runs stays readable by versions of star that predate it.
    """
    data = config.model_dump(mode="json")
    if config.al.annotator != "llm" and config.llm_annotator == LLMAnnotatorConfig():
        data.pop("llm_annotator")
    return yaml.safe_dump(data, sort_keys=False)


def reference_markdown() -> str:
    """The configuration reference as Markdown tables (README's section is generated from this)."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, _Section):
            continue
        lines.append(f"| `{name}` | `{field.get_default(call_default_factory=True)}` | {field.description or ''} |")
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, _Section)):
            continue
        lines += ["", f"**`{name}`**: {(section.__doc__ or '').strip().splitlines()[0]}", "",
                  "| option | default | meaning |", "|---|---|---|"]
        lines += _option_rows(name, section)
    return "\n".join(lines)


def _option_rows(prefix: str, section: type[_Section]) -> list[str]:
    """One table row per option of `section`; a nested section (e.g. al.stop) gives one row per option of its own."""
    rows = []
    for key, sub in section.model_fields.items():
        if isinstance(sub.annotation, type) and issubclass(sub.annotation, _Section):
            rows += _option_rows(f"{prefix}.{key}", sub.annotation)
            continue
        default = str(sub.get_default(call_default_factory=True)).replace("\n", "\\n")  # one table row
        rows.append(f"| `{prefix}.{key}` | `{default}` | {sub.description or ''} |")
    return rows
