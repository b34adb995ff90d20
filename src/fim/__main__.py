"""`python -m fim`: the builder command line."""

import sys

from fim.cli import main

sys.exit(main())
