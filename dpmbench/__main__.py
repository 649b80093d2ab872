"""``python -m dpmbench``."""

import sys

from dpmbench.cli import main

sys.exit(main())
