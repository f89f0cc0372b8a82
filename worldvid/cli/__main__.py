"""``python -m worldvid.cli ...``: the ``worldvid`` console script."""

import sys

from worldvid.cli import main

sys.exit(main())
