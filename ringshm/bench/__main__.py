"""``python -m ringshm.bench``: the same as ``ringshm bench``."""

import sys

from . import main

sys.exit(main())
