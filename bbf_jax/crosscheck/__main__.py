"""``python -m bbf_jax.crosscheck`` = ``bbf-crosscheck``."""

import sys

from bbf_jax.crosscheck.cli import main

sys.exit(main())
