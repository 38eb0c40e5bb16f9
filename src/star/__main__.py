"""`python -m star` (and `accelerate launch -m star`) runs the CLI."""

from .cli import main
from .distributed import exit_process

exit_process(main())
