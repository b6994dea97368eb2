"""An app module that stops the process when imported (a CLI script mistaken for an app)."""

import sys

sys.exit(3)
