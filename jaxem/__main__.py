"""``python -m jaxem``: the same command line as the ``jaxem`` script."""

import sys

from jaxem.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
