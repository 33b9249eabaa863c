"""The process's environment, as one value the front builds and the layers below receive.

A run needs a few things from the process around it: the environment
variables (credentials, endpoints, tuning), stdout for NDJSON, stderr for
the signal handler's last words, a folder for state kept between runs, the
command name a lock file quotes, the clocks, and the machine's cores and
memory (which the loader's default budget follows). Read deep in the stack they
would be hidden inputs: a library caller could not steer them and a test
could only patch globals. So the front (the CLI, :func:`mpexport.export`,
:func:`mpexport.sync`, :func:`mpexport.profiles`) builds one
:class:`Environment` with :meth:`Environment.from_process`, the one place
that reads ``os.environ`` and ``sys``, and hands it down; a caller may pass
its own instead (another set of variables, another state folder, a stdout
of its own).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

STATE_DIR_ENV = "MPEXPORT_STATE_DIR"

# Other runs' messages quote a lock holder's command: only a command name of
# ours, never whatever a host program (the library's caller) has in argv.
# One rule for every lock that names its holder (a database's, a lake's).
COMMANDS = frozenset({"export", "sync", "profiles", "demo"})
LIBRARY_COMMAND = "mpexport (library)"


def command_name(argv: Sequence[str]) -> str:
    """The holder's command for a lock's details: ``mpexport sync``, or ``mpexport (library)``.

    Only ``argv[1]``, and only when it is one of mpexport's commands: a host
    program's arguments (a script's token, say) never reach a lock file.
    """
    word = argv[1] if len(argv) > 1 else ""
    return f"mpexport {word}" if word in COMMANDS else LIBRARY_COMMAND


def machine_cpus() -> int | None:
    """The cores this process may run on (its CPU affinity where the OS has one), None if unknown.

    The affinity rather than ``os.cpu_count()``: a process pinned to 2 of a
    host's 64 cores (``taskset``, a container's cpuset) has 2 to work with.
    """
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0)) or None
        except OSError:
            pass
    return os.cpu_count()


def machine_memory() -> int | None:
    """The memory this process may use in bytes: the machine's, or its container's limit if lower.

    None when the platform does not say. Windows asks ``GlobalMemoryStatusEx``;
    POSIX multiplies the page size by the physical pages, then takes a cgroup's
    memory limit into account, since a container sees its host's memory in
    ``sysconf`` but is killed at its own limit.
    """
    if sys.platform == "win32":
        return _windows_memory()
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    if total <= 0:
        return None
    limit = _cgroup_memory_limit()
    return min(total, limit) if limit else total


# cgroup v2, then v1: the memory limit of the container the process runs in
# (each is the container's own in its namespace; "max" or a huge number when
# there is none).
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_memory_limit() -> int | None:
    for name in _CGROUP_LIMITS:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and int(text) > 0 else None
    return None


def _windows_memory() -> int | None:
    if sys.platform != "win32":  # for the type checker: windll exists on Windows only
        return None
    import ctypes

    class MemoryStatus(ctypes.Structure):
        # MEMORYSTATUSEX, as GlobalMemoryStatusEx fills it.
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong),
                    ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong),
                    ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullTotalPhys) or None


def state_dir(environ: Mapping[str, str]) -> Path:
    """The folder for mpexport's state: ``$MPEXPORT_STATE_DIR`` or the platform default."""
    override = environ.get(STATE_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs  # only when needed: --help imports nothing it does not use

    # appauthor=False: %LOCALAPPDATA%\mpexport on Windows, not ...\mpexport\mpexport.
    return platformdirs.user_state_path("mpexport", appauthor=False)


@dataclass(frozen=True)
class Environment:
    """What a run takes from its process; built at the front, passed down, never global.

    ``environ`` holds the variables a run reads (``MP_*`` credentials,
    ``MPEXPORT_*`` tuning, ``SSL_CERT_FILE``, the object stores' endpoints and
    secrets). ``stdout`` is where NDJSON goes when no output is given: None
    when the process has no binary stdout (a notebook), which then fails only
    a run that writes there. ``stderr`` is the stream whose descriptor and
    encoding the signal handler writes its notes with. ``state_dir`` holds the
    hourly query budget and the profile sessions kept for resuming.
    ``command_name`` is what lock files say holds them. ``wall`` and
    ``monotonic`` are the clocks of the rate limiter. ``cpus`` and
    ``memory_bytes`` are the machine's cores and memory (None when unknown),
    which the loader's default budget follows.
    """

    environ: Mapping[str, str]
    state_dir: Path
    stdout: BinaryIO | None = None
    stderr: TextIO | None = None
    command_name: str = LIBRARY_COMMAND
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    cpus: int | None = None
    memory_bytes: int | None = None

    @classmethod
    def from_process(cls) -> Environment:
        """This process's environment: ``os.environ``, ``sys.stdout``, ``sys.argv``'s command.

        Read when called, at the start of a run: a variable set (or a stream
        replaced) before the call counts. The machine's cores and memory
        are read here too, once.
        """
        environ = os.environ
        return cls(environ=environ, state_dir=state_dir(environ),
                   stdout=getattr(sys.stdout, "buffer", None), stderr=sys.stderr,
                   command_name=command_name(sys.argv), cpus=machine_cpus(),
                   memory_bytes=machine_memory())

    @classmethod
    def of(cls, environ: Mapping[str, str], *, stdout: BinaryIO | None = None,
           stderr: TextIO | None = None, command_name: str = LIBRARY_COMMAND,
           cpus: int | None = None, memory_bytes: int | None = None) -> Environment:
        """An environment of the variables ``environ``, its state folder read from them.

        For library callers and tests: ``Environment.of({"MP_API_SECRET": ...},
        stdout=buffer)`` runs without touching the process's variables (other
        clocks: :func:`dataclasses.replace`). It runs on this machine: ``cpus``
        and ``memory_bytes`` are read from it unless given.
        """
        return cls(environ=environ, state_dir=state_dir(environ), stdout=stdout, stderr=stderr,
                   command_name=command_name,
                   cpus=cpus if cpus is not None else machine_cpus(),
                   memory_bytes=memory_bytes if memory_bytes is not None else machine_memory())
