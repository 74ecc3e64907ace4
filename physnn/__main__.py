"""``python -m physnn``: the ``physnn`` command line where its console script is not on ``PATH``."""

import sys

from .cli import main

sys.exit(main())
