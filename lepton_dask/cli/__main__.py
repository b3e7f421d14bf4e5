"""``python -m lepton_dask.cli``."""

import contextlib
import sys

from lepton_dask.cli import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())
