"""`python -m tinytorch ...` is the `tinytorch` command."""
import sys

from .cli import main

sys.exit(main())
