"""`python -m star` (and `accelerate launch -m star`) runs the CLI."""

from .cli import entry

entry()
