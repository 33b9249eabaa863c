"""``python -m mpexport`` and the ``mpexport`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the CLI and exit with its code."""
    from mpexport.cli.main import run

    sys.exit(run())


if __name__ == "__main__":
    main()
