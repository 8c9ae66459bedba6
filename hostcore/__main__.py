"""`python -m hostcore`: see hostcore.cli."""

import sys

from hostcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
