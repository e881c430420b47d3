"""``python -m qbb`` is the ``qbb`` command."""

import sys

from qbb.cli import main

sys.exit(main())
