"""The config file on Windows, emulated on any OS: restricted to its user with icacls.

Windows is emulated by patching ``sys.platform`` (the check the code makes)
only around the write, and ``subprocess.run`` by a fake that records the
command instead of running icacls. The fake also notes the size of the file
it was asked to protect: zero proves the access list is set before the
secret is written.
"""

from __future__ import annotations

import ntpath
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import platformdirs.windows
import pytest
from click.testing import CliRunner

from mpexport import atomic
from mpexport.cli.config import config_group
from mpexport.config import private_file
from mpexport.config.load import load_config
from mpexport.config.paths import config_path
from mpexport.config.save import write_profile

SECRET = "sa-secret-0123456789abcdef"
SYSTEM_ROOT = "C:\\Windows"
ICACLS = ntpath.join(SYSTEM_ROOT, "System32", "icacls.exe")
TEMP_NAME = ".config.toml.0123456789abcdef.tmp"


@dataclass
class FakeRun:
    """Stands in for ``subprocess.run``: records each call, then answers as told."""

    returncode: int = 0
    stderr: bytes = b""
    raises: BaseException | None = None
    argvs: list[list[str]] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def __call__(self, argv: Any, **options: Any) -> subprocess.CompletedProcess[bytes]:
        """Record the call (and the target file's size at that moment)."""
        self.argvs.append(argv)
        self.options.append(options)
        self.sizes.append(Path(argv[1]).stat().st_size)
        if self.raises is not None:
            raise self.raises
        return subprocess.CompletedProcess(argv, self.returncode, b"", self.stderr)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    """A fake icacls, a known account, and a temp file name that is always the same."""
    fake = FakeRun()
    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(atomic, "temp_sibling", lambda path: path.with_name(TEMP_NAME))
    monkeypatch.setenv("USERNAME", "ann")
    monkeypatch.setenv("USERDOMAIN", "OFFICE")
    monkeypatch.setenv("SYSTEMROOT", SYSTEM_ROOT)
    return fake


@contextmanager
def platform(name: str) -> Iterator[None]:
    """``sys.platform`` is ``name`` inside the block only (pytest itself never sees it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "platform", name)
        yield


def save() -> Path:
    return write_profile("prod", username="sa.prod", secret=SECRET, project_id=22)


# ------------------------------------------------------------------ protected


def test_the_file_is_restricted_to_the_user_before_the_secret_is_written(
    fake_run: FakeRun, isolated_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with platform("win32"):
        path = save()
    assert fake_run.argvs == [
        [ICACLS, str(isolated_config / TEMP_NAME), "/inheritance:r", "/grant:r", "OFFICE\\ann:F"]
    ]
    # Empty when restricted: the secret never sat on disk under the folder's ACL.
    assert fake_run.sizes == [0]
    # An argument list and no shell: nothing in the path or the name is interpreted.
    assert fake_run.options[0].get("shell", False) is False
    assert fake_run.options[0]["timeout"] == private_file.ICACLS_TIMEOUT
    # The protected temp file is what became the config (the move keeps its ACL).
    assert not (isolated_config / TEMP_NAME).exists()
    assert load_config().profiles["prod"].secret == SECRET
    assert path == isolated_config / "config.toml"
    assert capsys.readouterr().err == ""


def test_without_a_domain_the_bare_user_name_is_granted(
    fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USERDOMAIN")
    monkeypatch.delenv("SYSTEMROOT")
    with platform("win32"):
        save()
    assert len(fake_run.argvs) == 1
    assert fake_run.argvs[0][0] == "icacls"
    assert fake_run.argvs[0][2:] == ["/inheritance:r", "/grant:r", "ann:F"]


def test_posix_keeps_the_mode_and_never_runs_icacls(fake_run: FakeRun) -> None:
    with platform("linux"):
        save()
    assert fake_run.argvs == []
    assert load_config().profiles["prod"].secret == SECRET


# ------------------------------------------------------------------ when icacls fails


NO_MAPPING = b"C:\\x: No mapping between account names and security IDs was done.\r\n"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ({"returncode": 1332, "stderr": NO_MAPPING},
         "icacls failed with exit status 1332: C:\\x: No mapping between account names"),
        ({"returncode": 5}, "icacls failed with exit status 5)"),
        ({"raises": FileNotFoundError(2, "The system cannot find the file specified")},
         "cannot run icacls: The system cannot find the file specified"),
        ({"raises": subprocess.TimeoutExpired(ICACLS, 60.0)},
         "icacls did not finish within 60 s"),
    ],
    ids=["refused", "silent-refusal", "missing", "hung"],
)
def test_a_failed_icacls_warns_once_and_still_saves(
    fake_run: FakeRun, capsys: pytest.CaptureFixture[str], failure: dict[str, Any], reason: str
) -> None:
    for name, value in failure.items():
        setattr(fake_run, name, value)
    with platform("win32"):
        path = save()
    assert len(fake_run.argvs) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"mpexport: warning: could not restrict {path} to your Windows account")
    assert reason in line
    assert "protect the file yourself" in line
    assert "MP_* environment variables" in line
    assert SECRET not in line
    assert load_config().profiles["prod"].secret == SECRET


def test_an_unknown_account_warns_without_running_icacls(
    fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("USERNAME")
    with platform("win32"):
        path = save()
    assert fake_run.argvs == []
    (line,) = capsys.readouterr().err.splitlines()
    assert f"could not restrict {path}" in line
    assert "USERNAME is not set" in line
    assert load_config().profiles["prod"].secret == SECRET


def test_config_init_succeeds_with_the_warning(fake_run: FakeRun, isolated_config: Path) -> None:
    fake_run.returncode = 1332
    with platform("win32"):
        result = CliRunner().invoke(
            config_group,
            ["init", "--profile", "ci", "--username", "sa.ci", "--project-id", "7"],
            input=SECRET + "\n",
        )
    assert result.exit_code == 0, result.output
    assert len(fake_run.argvs) == 1
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("mpexport: warning: could not restrict "
                                  f"{isolated_config / 'config.toml'} to your Windows account")
    assert "saved profile ci" in result.stderr
    assert SECRET not in result.output
    assert load_config().profiles["ci"].secret == SECRET


# ------------------------------------------------------------------ where the file is


def test_windows_config_dir_has_no_author_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "AppData" / "Local"
    monkeypatch.setattr(platformdirs, "PlatformDirs", platformdirs.windows.Windows)
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", lambda _csidl: str(local))
    # The emulation works: platformdirs' own default would nest mpexport twice.
    assert platformdirs.user_config_path("mpexport") == local / "mpexport" / "mpexport"
    assert config_path({}) == local / "mpexport" / "config.toml"


# ------------------------------------------------------------------ created private by Win32


USER_SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
OTHER_SID = "S-1-5-21-1004336348-1177238915-682003330-1002"


def test_the_security_descriptor_lets_the_token_user_alone_in() -> None:
    assert private_file.owner_only_sddl(USER_SID) == f"D:P(A;;FA;;;{USER_SID})"
    # What the token gives is a SID; anything else could smuggle in entries.
    for bad in ["", "ann", f"{USER_SID})(A;;FA;;;WD", "S-1-", "S-1-5-x", f"{USER_SID} "]:
        with pytest.raises(ValueError):
            private_file.owner_only_sddl(bad)


@pytest.mark.parametrize(("sddl", "readers"), [
    (f"D:P(A;;FA;;;{USER_SID})", []),
    # What a file under a user's profile inherits: the user, SYSTEM, Administrators.
    (f"D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;FA;;;{USER_SID})", []),
    # A shared folder's: Users may read and execute (a hex mask, no exact letters).
    (f"D:AI(A;ID;FA;;;{USER_SID})(A;ID;0x1200a9;;;BU)(A;ID;FA;;;SY)", ["Users"]),
    (f"D:(A;;FA;;;{USER_SID})(A;;FR;;;WD)(A;;GR;;;{OTHER_SID})", ["Everyone", OTHER_SID]),
    # Rights without reading the data, an entry only for children, a deny: no reader.
    (f"D:(A;;FA;;;{USER_SID})(A;;0x100000;;;BU)(A;OICIIO;FA;;;BU)(D;;FA;;;WD)", []),
    (f"D:(A;;FA;;;{USER_SID})(A;;GA;;;AU)(A;;CC;;;{OTHER_SID})",
     ["Authenticated Users", OTHER_SID]),
    ("O:BAG:SYD:PAI(A;;FA;;;BU)S:(AU;FA;FA;;;WD)", ["Users"]),
])
def test_other_readers_come_from_the_access_list(sddl: str, readers: list[str]) -> None:
    assert private_file.other_readers(sddl, USER_SID) == readers


@pytest.fixture
def win32_api(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The Win32 calls as they answer on Windows: the token's SID; a private create."""
    created: list[Path] = []

    def create_owner_only(path: Path) -> int:
        created.append(path)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    monkeypatch.setattr(private_file, "current_user_sid", lambda: USER_SID)
    monkeypatch.setattr(private_file, "create_owner_only", create_owner_only)
    return created


def test_the_file_is_created_private_by_win32_and_icacls_is_not_needed(
    fake_run: FakeRun, win32_api: list[Path], isolated_config: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    with platform("win32"):
        save()
    assert win32_api == [isolated_config / TEMP_NAME]
    assert fake_run.argvs == []
    assert load_config().profiles["prod"].secret == SECRET
    assert capsys.readouterr().err == ""


def test_without_win32_security_icacls_grants_the_token_sid_not_username(
    fake_run: FakeRun, win32_api: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_acls(path: Path) -> int:
        raise OSError(50, "The request is not supported")  # FAT, a network drive

    monkeypatch.setattr(private_file, "create_owner_only", no_acls)
    monkeypatch.setenv("USERNAME", "someone-else")
    with platform("win32"):
        save()
    assert len(fake_run.argvs) == 1
    assert fake_run.argvs[0][2:] == ["/inheritance:r", "/grant:r", f"*{USER_SID}:F"]
    assert fake_run.sizes == [0]


def test_config_show_warns_on_windows_when_others_may_read(
    fake_run: FakeRun, win32_api: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpexport.config.show import show_config

    with platform("win32"):
        path = save()
    shared = f"D:AI(A;ID;FA;;;{USER_SID})(A;ID;0x1200a9;;;BU)"
    monkeypatch.setattr(private_file, "file_sddl", lambda _p: shared)
    with platform("win32"):
        shown = show_config()
    assert (f"# warning: {path} is readable by other accounts (Users); run: "
            f'icacls "{path}" /inheritance:r /grant:r *{USER_SID}:F') in shown.splitlines()

    monkeypatch.setattr(private_file, "file_sddl", lambda _p: f"D:P(A;;FA;;;{USER_SID})")
    with platform("win32"):
        assert "warning" not in show_config()


# ------------------------------------------------------------------ a held config file


def test_a_config_file_held_past_the_retries_is_exit_4_naming_it(
    fake_run: FakeRun, isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpexport.errors import FileInUseError, exit_code_for

    save()
    before = (isolated_config / "config.toml").read_bytes()
    pauses: list[float] = []

    def held(src: object, dst: object) -> None:
        error = PermissionError(13, "The process cannot access the file", str(dst))
        error.winerror = 32  # type: ignore[attr-defined]
        raise error

    monkeypatch.setattr(atomic, "_pause", pauses.append)
    monkeypatch.setattr(os, "replace", held)
    with pytest.raises(FileInUseError) as failed:
        write_profile("other", username="sa.o", secret=SECRET, project_id=23)
    assert exit_code_for(failed.value) == 4
    assert failed.value.one_line() == (
        f"{isolated_config / 'config.toml'} is open in another program, which kept it past "
        "the retries (close what has it open (an editor, a sync client) and run the same "
        "command again)")
    assert pauses == list(atomic.BACKOFF_SECONDS)
    assert (isolated_config / "config.toml").read_bytes() == before
    assert sorted(p.name for p in isolated_config.iterdir()) == ["config.toml"]


def test_a_config_file_held_for_a_moment_is_saved(
    fake_run: FakeRun, isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save()
    real = os.replace
    refusals = [1]
    pauses: list[float] = []

    def held_once(src: object, dst: object) -> None:
        if refusals:
            refusals.pop()
            error = PermissionError(13, "The process cannot access the file", str(dst))
            error.winerror = 32  # type: ignore[attr-defined]
            raise error
        real(str(src), str(dst))

    monkeypatch.setattr(atomic, "_pause", pauses.append)
    monkeypatch.setattr(os, "replace", held_once)
    write_profile("other", username="sa.o", secret=SECRET, project_id=23)
    assert pauses == [0.05]
    assert set(load_config().profiles) == {"prod", "other"}


def test_a_config_file_this_user_may_not_replace_is_exit_2(
    fake_run: FakeRun, isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpexport.errors import AccessDeniedError, exit_code_for

    save()

    def denied(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(AccessDeniedError) as failed:
        write_profile("other", username="sa.o", secret=SECRET, project_id=23)
    assert exit_code_for(failed.value) == 2
    assert failed.value.message == (
        f"cannot replace {isolated_config / 'config.toml'}: Permission denied")
