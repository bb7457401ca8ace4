"""`python -m paretoalign.cli ...`: the `paretoalign` command."""

import sys

from paretoalign.cli import main

sys.exit(main())
