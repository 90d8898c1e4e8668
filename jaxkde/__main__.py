"""``python -m jaxkde``: the same as the ``jaxkde`` command."""

import sys

from jaxkde.apps.cli import main

sys.exit(main())
