"""``python -m bbf_jax.sweep``: same as ``bbf-sweep``."""

import sys

from bbf_jax.sweep.cli import main

sys.exit(main())
