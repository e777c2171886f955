"""``python -m jaxem``: the same command line as the ``jaxem`` script."""

import sys

from jaxem.cli import main

if __name__ == "__main__":
    sys.exit(main())
