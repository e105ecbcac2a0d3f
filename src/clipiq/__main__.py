"""``python -m clipiq``: the ``clipiq`` command without its installed script (e.g. from a source tree)."""

import sys

from clipiq.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
