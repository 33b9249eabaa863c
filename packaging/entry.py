"""Entry script of the frozen ``mpexport`` executable (PyInstaller).

The same ``main()`` as the ``mpexport`` console script, after
``multiprocessing.freeze_support()``: should anything ever start a
multiprocessing child (tqdm's lock, a resource tracker, a future worker pool),
the frozen executable is re-run as that child, and freeze_support() turns it
into the child instead of a second CLI run.
"""

from __future__ import annotations

import multiprocessing


def main() -> None:
    multiprocessing.freeze_support()
    from mpexport.__main__ import main as run

    run()


if __name__ == "__main__":
    main()
