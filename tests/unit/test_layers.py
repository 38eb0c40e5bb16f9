"""The house rules: imports point down the layers, modules stay small, the public API stays put."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import star

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "star"
MAX_LINES = 350


def test_import_contracts_are_kept() -> None:
    """pyproject's import-linter contracts: layers, and annotation never reaching the model.

    Run in a child process: import-linter configures logging, which would silence star's loggers here.
    """
    pytest.importorskip("importlinter.cli", reason="pip install import-linter (in the test extra)")
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_long_module_says_why_in_its_docstring(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    lines = source.count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(source)) or ""
    assert "Size:" in doc, f"{path.name} has {lines} lines: split it, or say why in a 'Size:' line of its docstring"


def test_public_api_names_resolve() -> None:
    from star.experiments import compare
    from star.experiments.report import write_report
    from star.store.labels import LabelStore

    assert star.compare is compare  # `star.compare.compare(...)`, `star.compare.Arm`, as the README shows
    assert callable(star.compare.compare) and callable(star.compare.resume_compare) and star.compare.Arm
    assert (star.write_report, star.LabelStore) == (write_report, LabelStore)
    assert callable(star.run) and callable(star.build_config) and callable(star.load_config)
    assert all(getattr(star, name) is not None for name in star.__all__)  # every exported name, the lazy ones too
    assert set(star._LAZY) <= set(star.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        star.nope  # noqa: B018
