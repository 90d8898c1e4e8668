"""``python -m jaxkde``: the same as the ``jaxkde`` command."""

import sys

from .cli import main

sys.exit(main())
