"""``python -m dashboard`` is the same as ``echo-s3-viewer``."""

import sys

from .cli import main

sys.exit(main())
