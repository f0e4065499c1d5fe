"""``python -m ringshm.bench``: the same as ``ringshm bench``."""

import sys

from . import main

if __name__ == "__main__":   # importing it (tests/test_layers.py) runs no bench
    sys.exit(main())
