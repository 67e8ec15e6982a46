"""`python -m ovml.cli ...`: the same commands as the `ovml` program."""
import sys

from . import main

sys.exit(main())
