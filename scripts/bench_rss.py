"""Run one command and record its wall time, exit code, peak RSS and CPU time as JSON.

scripts/bench.py starts every measured command through this small launcher
instead of directly. The reason is ``ru_maxrss``: Linux records in it the
high-water mark of the memory the child had *before* exec too, which for a
child forked (or vforked) from the benchmark process is the benchmark's own
RSS, about 1 GB once the fake server's event cache is warm. Forked from this
~10 MB process instead, the child's ``ru_maxrss`` (from ``os.wait4``, so for
this one child only) is its own peak.

    python scripts/bench_rss.py RESULT.json STDOUT STDERR -- COMMAND [ARG...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Run the command after ``--``; write the result JSON; exit 0 unless misused."""
    if len(argv) < 5 or argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result_path, out_path, err_path, command = argv[0], argv[1], argv[2], argv[4:]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as handle:
        json.dump({
            "seconds": seconds,
            "rc": proc.returncode,
            "maxrss_kb": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
