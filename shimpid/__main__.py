"""``python -m shimpid``: the operator's command line (see shimpid._cli)."""

import sys

from ._cli import main

sys.exit(main())
