"""`python -m star` (and `accelerate launch -m star`) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
