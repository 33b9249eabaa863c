"""Keeping the config file, which holds secrets, readable by its own user only.

On POSIX the file is created with mode 0600 in a directory created 0700, so
it is never readable by others, not even while it is being written.

On Windows mode bits mean nothing (only "read-only" exists) and a new file
takes the ACL of its folder: under ``MPEXPORT_CONFIG_DIR`` in a shared folder
any local user could read the secrets. So the temp file is created by
``CreateFileW`` itself with a security descriptor that lets only the
process token's user in (``D:P(A;;FA;;;<SID>)``: protected from the
folder's entries, full access for that SID alone) and no sharing, so no
other program opens it while the secret is written; moving it over the old
file keeps that ACL. The account is the token's, never ``USERNAME`` (which
any parent process may set). Where that fails (no Win32 security API, a
filesystem without ACLs), the file is created as before and restricted with
the system's ``icacls`` while it is still empty; if that fails too, the file
is written anyway and one warning line goes to stderr: failing the command
would protect nothing, and the user can protect the file or use environment
variables instead. ``config show`` warns when the file's ACL lets another
account read it (:func:`mode_warning`), on Windows too.

A config file another program holds for a moment (a sync client, a virus
scan) is waited for (:func:`mpexport.atomic.replacing`); one still held, or
one this user may not replace, is a one-line error, not a traceback.
"""

from __future__ import annotations

import contextlib
import ntpath
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from mpexport.atomic import replacing
from mpexport.errors import AccessDeniedError, FileInUseError
from mpexport.filelock import DENIED, HELD, why_refused

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
    try:
        with replacing(path) as temp:
            if on_windows():
                fd, problem = _create_on_windows(temp)
            else:
                fd = os.open(temp, _CREATE_FLAGS, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as error:
        refused = why_refused(error, path)
        if refused == HELD:
            raise FileInUseError(path) from None
        if refused == DENIED:
            raise AccessDeniedError(path, f"cannot replace {path}: "
                                          f"{error.strerror or error}") from None
        raise
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


def _create_on_windows(temp: Path) -> tuple[int, str | None]:
    """Create ``temp`` private to this user; its descriptor, and why it may not be private."""
    try:
        return create_owner_only(temp), None
    except OSError:
        pass  # no ACLs here, or no Win32 security API: the older way below
    fd = os.open(temp, _CREATE_FLAGS, 0o600)
    # While the file is still empty, so the secret never sits on disk under
    # the folder's access list. The open handle keeps its access.
    return fd, restrict_to_current_user(temp)


def on_windows() -> bool:
    """True on Windows, where file modes do not protect anything."""
    return sys.platform == "win32"


# ------------------------------------------------------------------ Windows security descriptors

_SID = re.compile(r"S-1(-\d+)+")
# Who may read the file without it being "readable by others": the user,
# the system account and the local Administrators (who can take any file),
# and the owner's rights. SDDL writes well-known ones as two letters.
_TRUSTED = frozenset({"SY", "S-1-5-18", "BA", "S-1-5-32-544", "OW", "S-1-3-4"})
_NAMES = {"WD": "Everyone", "BU": "Users", "AU": "Authenticated Users", "IU": "INTERACTIVE",
          "BG": "Guests", "AN": "ANONYMOUS LOGON", "NU": "NETWORK", "DU": "Domain Users",
          "S-1-1-0": "Everyone", "S-1-5-32-545": "Users", "S-1-5-11": "Authenticated Users"}
# Access rights (SDDL letters) that include reading the file's data:
# FILE_READ_DATA (0x1, which SDDL may write as CC or KR/KA), generic read, all.
_READ_LETTERS = frozenset({"FA", "FR", "GA", "GR", "CC", "KA", "KR"})
_READ_BITS = 0x1 | 0x80000000 | 0x10000000
_ACE = re.compile(r"\(([^;()]*);([^;()]*);([^;()]*);[^;()]*;[^;()]*;([^;()]*)(?:;[^()]*)?\)")


def owner_only_sddl(sid: str) -> str:
    """The security descriptor (SDDL) of a file only ``sid`` may use: ``D:P(A;;FA;;;<sid>)``.

    ``P`` protects the list from the folder's inherited entries; one entry
    allows ``sid`` full access (``FA``). ``sid`` must be a SID string
    (``S-1-5-21-…``): anything else could add entries of its own.
    """
    if not _SID.fullmatch(sid):
        raise ValueError(f"not a SID: {sid!r}")
    return f"D:P(A;;FA;;;{sid})"


def _grants_read(rights: str) -> bool:
    if rights.lower().startswith("0x"):
        try:
            return bool(int(rights, 16) & _READ_BITS)
        except ValueError:
            return True  # unreadable: say so rather than stay quiet
    letters = {rights[i:i + 2] for i in range(0, len(rights), 2)}
    return bool(letters & _READ_LETTERS)


def other_readers(sddl: str, user_sid: str) -> list[str]:
    """Who besides ``user_sid`` (and the system, Administrators) may read, by ``sddl``'s DACL.

    Only allow entries that apply to the file itself count (not those that
    are only inherited by children: ``IO``); a deny entry is not subtracted,
    so the answer errs on the side of a warning. Names are given for the
    common groups (``Users``, ``Everyone``), SIDs otherwise, in order.
    """
    dacl = sddl.split("D:", 1)[1] if "D:" in sddl else ""
    dacl = dacl.split("S:", 1)[0]  # the audit list is not about access
    readers: list[str] = []
    for kind, flags, rights, who in _ACE.findall(dacl):
        if kind not in ("A", "XA") or "IO" in flags or not _grants_read(rights):
            continue
        if who == user_sid or who in _TRUSTED:
            continue
        name = _NAMES.get(who, who)
        if name not in readers:
            readers.append(name)
    return readers


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI
    import ctypes
    from ctypes import wintypes

    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _TOKEN_QUERY = 0x0008
    _TOKEN_USER = 1  # TOKEN_INFORMATION_CLASS.TokenUser
    _SDDL_REVISION_1 = 1
    _DACL_SECURITY_INFORMATION = 0x4
    _SE_FILE_OBJECT = 1
    _GENERIC_WRITE = 0x40000000
    _CREATE_NEW = 1
    _FILE_ATTRIBUTE_NORMAL = 0x80
    _INVALID_HANDLE = wintypes.HANDLE(-1).value

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = [("nLength", wintypes.DWORD), ("lpSecurityDescriptor", wintypes.LPVOID),
                    ("bInheritHandle", wintypes.BOOL)]

    _kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    _kernel32.GetCurrentProcess.argtypes = []
    _kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    _kernel32.LocalFree.argtypes = [wintypes.HLOCAL]
    _kernel32.LocalFree.restype = wintypes.HLOCAL
    _kernel32.CreateFileW.argtypes = [wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD,
                                      ctypes.POINTER(_SecurityAttributes), wintypes.DWORD,
                                      wintypes.DWORD, wintypes.HANDLE]
    _kernel32.CreateFileW.restype = wintypes.HANDLE
    _advapi32.OpenProcessToken.argtypes = [wintypes.HANDLE, wintypes.DWORD,
                                           ctypes.POINTER(wintypes.HANDLE)]
    _advapi32.OpenProcessToken.restype = wintypes.BOOL
    _advapi32.GetTokenInformation.argtypes = [wintypes.HANDLE, ctypes.c_int, wintypes.LPVOID,
                                              wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
    _advapi32.GetTokenInformation.restype = wintypes.BOOL
    _advapi32.ConvertSidToStringSidW.argtypes = [wintypes.LPVOID,
                                                 ctypes.POINTER(wintypes.LPWSTR)]
    _advapi32.ConvertSidToStringSidW.restype = wintypes.BOOL
    _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = [
        wintypes.LPCWSTR, wintypes.DWORD, ctypes.POINTER(wintypes.LPVOID),
        ctypes.POINTER(wintypes.ULONG)]
    _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW.restype = wintypes.BOOL
    _advapi32.GetNamedSecurityInfoW.argtypes = [
        wintypes.LPCWSTR, ctypes.c_int, wintypes.DWORD, wintypes.LPVOID, wintypes.LPVOID,
        ctypes.POINTER(wintypes.LPVOID), wintypes.LPVOID, ctypes.POINTER(wintypes.LPVOID)]
    _advapi32.GetNamedSecurityInfoW.restype = wintypes.DWORD
    _advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW.argtypes = [
        wintypes.LPVOID, wintypes.DWORD, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR),
        ctypes.POINTER(wintypes.ULONG)]
    _advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW.restype = wintypes.BOOL

    def _failed() -> OSError:
        return ctypes.WinError(ctypes.get_last_error())

    def current_user_sid() -> str:
        """The SID (``S-1-5-21-…``) of the process token's user: who this process runs as."""
        token = wintypes.HANDLE()
        if not _advapi32.OpenProcessToken(_kernel32.GetCurrentProcess(), _TOKEN_QUERY,
                                          ctypes.byref(token)):
            raise _failed()
        try:
            size = wintypes.DWORD()
            _advapi32.GetTokenInformation(token, _TOKEN_USER, None, 0, ctypes.byref(size))
            buffer = ctypes.create_string_buffer(size.value)
            if not _advapi32.GetTokenInformation(token, _TOKEN_USER, buffer, size,
                                                 ctypes.byref(size)):
                raise _failed()
            # TOKEN_USER begins with SID_AND_ATTRIBUTES, which begins with the PSID.
            sid = ctypes.cast(buffer, ctypes.POINTER(wintypes.LPVOID))[0]
            text = wintypes.LPWSTR()
            if not _advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)):
                raise _failed()
            try:
                return str(text.value)
            finally:
                _kernel32.LocalFree(ctypes.cast(text, wintypes.HLOCAL))
        finally:
            _kernel32.CloseHandle(token)

    def create_owner_only(path: Path) -> int:
        """Create the new file ``path`` for writing, usable by this user only, shared with no one.

        Returns a C runtime descriptor (``os.fdopen`` takes it). Raises
        ``OSError`` when any step fails; nothing is created then.
        """
        sddl = owner_only_sddl(current_user_sid())
        descriptor = wintypes.LPVOID()
        if not _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, _SDDL_REVISION_1, ctypes.byref(descriptor), None):
            raise _failed()
        try:
            attributes = _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), descriptor,
                                             False)
            handle = _kernel32.CreateFileW(str(path), _GENERIC_WRITE, 0,
                                           ctypes.byref(attributes), _CREATE_NEW,
                                           _FILE_ATTRIBUTE_NORMAL, None)
            if handle is None or handle == _INVALID_HANDLE:
                raise _failed()
        finally:
            _kernel32.LocalFree(ctypes.cast(descriptor, wintypes.HLOCAL))
        import msvcrt

        try:
            return msvcrt.open_osfhandle(handle, os.O_WRONLY | os.O_BINARY)
        except OSError:
            _kernel32.CloseHandle(handle)
            raise

    def file_sddl(path: Path) -> str:
        """The access list (DACL) of ``path`` as SDDL."""
        descriptor = wintypes.LPVOID()
        status = _advapi32.GetNamedSecurityInfoW(str(path), _SE_FILE_OBJECT,
                                                 _DACL_SECURITY_INFORMATION, None, None, None,
                                                 None, ctypes.byref(descriptor))
        if status:
            raise ctypes.WinError(status)
        try:
            text = wintypes.LPWSTR()
            if not _advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                    descriptor, _SDDL_REVISION_1, _DACL_SECURITY_INFORMATION,
                    ctypes.byref(text), None):
                raise _failed()
            try:
                return str(text.value)
            finally:
                _kernel32.LocalFree(ctypes.cast(text, wintypes.HLOCAL))
        finally:
            _kernel32.LocalFree(ctypes.cast(descriptor, wintypes.HLOCAL))

else:

    def _no_win32() -> OSError:
        return OSError("the Win32 security API exists on Windows only")

    def current_user_sid() -> str:
        """The process token's user SID: Windows only (tests emulating Windows get here)."""
        raise _no_win32()

    def create_owner_only(path: Path) -> int:
        """Create ``path`` usable by this user only: Windows only; elsewhere mode 0600 does it."""
        raise _no_win32()

    def file_sddl(path: Path) -> str:
        """The access list of ``path`` as SDDL: Windows only."""
        raise _no_win32()


def current_account() -> str | None:
    """The account for ``icacls``: ``*<SID>`` of the process token, else ``DOMAIN\\user``.

    The token says who this process runs as; ``USERNAME`` is only what the
    environment claims (any parent process may set it), so it is the last resort.
    """
    with contextlib.suppress(OSError):
        return f"*{current_user_sid()}"
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
    """A warning when the config file is readable by other users (its mode; on Windows its ACL)."""
    if on_windows():
        return _acl_warning(path)
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} is readable by other users (mode {mode:04o}); run: chmod 600 {path}"
    return None


def _acl_warning(path: Path) -> str | None:
    """On Windows: a warning when ``path``'s access list lets another account read it."""
    try:
        sid = current_user_sid()
        readers = other_readers(file_sddl(path), sid)
    except OSError:
        return None  # no answer is no warning: the file may be on a filesystem without ACLs
    if not readers:
        return None
    return (f"{path} is readable by other accounts ({', '.join(readers)}); run: "
            f'icacls "{path}" /inheritance:r /grant:r *{sid}:F')


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
