"""``python -m serving``: the service's command line (:mod:`serving.cli`)."""

import sys

from serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
