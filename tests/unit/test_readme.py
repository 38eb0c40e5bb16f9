"""The README's configuration reference is the one the code generates."""

from pathlib import Path

from star.config import reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_matches_the_code() -> None:
    assert reference_markdown() in README.read_text(encoding="utf-8"), (
        "README.md's configuration reference is stale: paste star.config.reference_markdown() into it"
    )
