"""Keeping the config file, which holds secrets, readable by its own user only.

On POSIX the file is created with mode 0600 in a directory created 0700, so
it is never readable by others, not even while it is being written.

On Windows mode bits mean nothing (only "read-only" exists) and a new file
takes the ACL of its folder: under ``MPEXPORT_CONFIG_DIR`` in a shared folder
any local user could read the secrets. So the new file is restricted to the
current account with the system's ``icacls`` while it is still empty, before
any secret is written into it; moving it over the old file keeps that ACL.
If that fails, the file is written anyway and one warning line goes to
stderr: failing the command would protect nothing, and the user can protect
the file or use environment variables instead.
"""

from __future__ import annotations

import contextlib
import ntpath
import os
import stat
import subprocess
import sys
from pathlib import Path

from mpexport.atomic import replacing

# Far more than icacls needs on a local disk; only a guard against a hung share.
ICACLS_TIMEOUT = 60.0
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable by the current user only.

    The directory is created (0700) if missing. The text goes to a temp file
    beside ``path`` (:func:`mpexport.atomic.replacing`) that is private from
    creation (mode 0600; on Windows also an ACL set before the text is
    written), is fsynced, then moved over ``path``. On Windows, a failure to
    set the ACL prints a warning on stderr and does not fail the write.
    """
    data = text.encode("utf-8")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = None
    with replacing(path) as temp:
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
        with os.fdopen(fd, "wb") as handle:
            if on_windows():
                # While the file is still empty, so the secret never sits on
                # disk under the folder's access list. The open handle keeps
                # its access, and no one can swap the file while it is held.
                problem = restrict_to_current_user(temp)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    _fsync_dir(path.parent)
    if problem is not None:
        # Printed rather than raised or logged: the profile is saved and works,
        # and the user must see this whatever logging is set up.
        print(
            f"mpexport: warning: could not restrict {path} to your Windows account "
            f"({problem}); other users of this computer may be able to read the secret "
            "in it: protect the file yourself, or use the MP_* environment variables "
            "instead of a profile",
            file=sys.stderr,
            flush=True,
        )


def on_windows() -> bool:
    """True on Windows, where file modes do not protect anything."""
    return sys.platform == "win32"


def current_account() -> str | None:
    """``DOMAIN\\user`` of the current Windows account (just ``user`` without a domain)."""
    user = os.environ.get("USERNAME")
    if not user:
        return None
    domain = os.environ.get("USERDOMAIN")
    return f"{domain}\\{user}" if domain else user


def icacls_argv(path: Path, account: str) -> list[str]:
    """The ``icacls`` command that leaves ``account`` the only one with access to ``path``.

    ``/inheritance:r`` drops the entries inherited from the folder (a shared
    folder's "Users: read"); ``/grant:r`` replaces any explicit grant to
    ``account`` with full control (``F``).
    """
    system_root = os.environ.get("SYSTEMROOT")
    # The full path when known, so an icacls.exe in the current directory never runs.
    program = ntpath.join(system_root, "System32", "icacls.exe") if system_root else "icacls"
    return [program, str(path), "/inheritance:r", "/grant:r", f"{account}:F"]


def restrict_to_current_user(path: Path) -> str | None:
    """Restrict ``path`` to the current Windows account; None, or why it failed.

    Runs icacls without a shell: the path and account name are single
    arguments that no shell gets to interpret.
    """
    account = current_account()
    if account is None:
        return "USERNAME is not set, so the account is unknown"
    try:
        done = subprocess.run(
            icacls_argv(path, account),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=ICACLS_TIMEOUT,
            check=False,
        )
    except OSError as exc:
        return f"cannot run icacls: {exc.strerror or exc}"
    except subprocess.SubprocessError:
        return f"icacls did not finish within {ICACLS_TIMEOUT:g} s"
    if done.returncode != 0:
        said = _first_line(done.stderr) or _first_line(done.stdout)
        return f"icacls failed with exit status {done.returncode}" + (f": {said}" if said else "")
    return None


def _first_line(output: bytes | None) -> str:
    # icacls writes in the console's code page; a garbled letter beats no reason.
    text = (output or b"").decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Only printable characters reach the terminal.
    return "".join(c if c.isprintable() else "?" for c in lines[0][:200]) if lines else ""


def mode_warning(path: Path) -> str | None:
    """A warning when the config file is readable by other users (POSIX only)."""
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}"
    return None


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable on POSIX; directories cannot be opened on Windows.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
