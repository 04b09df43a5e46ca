"""``python -m al_lightning.report RUN_DIR... --out DIR`` (see :mod:`al_lightning.report.command`)."""

import sys

from al_lightning.report.command import main

sys.exit(main())
