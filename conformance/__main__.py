"""``python -m conformance``: the ``conformance`` command, where its script is not on PATH."""

import sys

from conformance.cli import main

if __name__ == "__main__":
    sys.exit(main())
