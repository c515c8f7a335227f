"""``python -m bbf_jax.report``: same as ``bbf-report``."""

import sys

from bbf_jax.report.cli import main

sys.exit(main())
