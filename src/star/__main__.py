"""`python -m star` (and `accelerate launch -m star`) runs the CLI."""

from star.cli import entry

entry()
