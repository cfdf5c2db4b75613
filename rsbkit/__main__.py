"""``python -m rsbkit``: the command line (rsbkit.workbook.cli)."""
import sys

from .workbook.cli import main

if __name__ == "__main__":
    sys.exit(main())
