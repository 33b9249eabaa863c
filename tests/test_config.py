"""Config profiles: resolution order, errors, private atomic writes, masking, TOML escaping."""

from __future__ import annotations

import io
import os
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpexport.cli.config import read_secret
from mpexport.config.load import load_config
from mpexport.config.paths import config_path
from mpexport.config.render import toml_string
from mpexport.config.resolve import LEGACY_SECRET_WARNING, resolve_credentials
from mpexport.config.save import write_profile
from mpexport.config.show import show_config
from mpexport.errors import CredentialsError, UsageError

POSIX = os.name == "posix"
SA_SECRET = "sa-secret-0123456789abcdef"
PROD_SECRET = "prod-secret-fedcba9876543210"
LEGACY_SECRET = "legacy-api-secret-5555"


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the config dir at a temp dir, and clear every MP_*/MPEXPORT_PROFILE variable."""
    path = tmp_path / "config"
    monkeypatch.setenv("MPEXPORT_CONFIG_DIR", str(path))
    for name in list(os.environ):
        if name.startswith("MP_") or name == "MPEXPORT_PROFILE":
            monkeypatch.delenv(name)
    return path


def env(config_dir: Path, **extra: str) -> dict[str, str]:
    return {"MPEXPORT_CONFIG_DIR": str(config_dir), **extra}


def two_profiles(default: str | None = None) -> Path:
    write_profile("staging", username="sa.staging", secret=SA_SECRET, project_id=11,
                  region="eu", make_default=False)
    path = write_profile("prod", username="sa.prod", secret=PROD_SECRET, project_id=22,
                         make_default=False)
    if default:
        write_profile(default, username=f"sa.{default}", secret="x" * 8, project_id=33,
                      make_default=True)
    return path


# ------------------------------------------------------------------ paths


def test_config_dir_comes_from_env(config_dir: Path) -> None:
    assert config_path() == config_dir / "config.toml"
    other = {"MPEXPORT_CONFIG_DIR": "/somewhere/else"}
    assert config_path(other) == Path("/somewhere/else/config.toml")


def test_platform_default_when_unset() -> None:
    path = config_path({})
    assert path.name == "config.toml"
    assert path.parent.name == "mpexport"


# ------------------------------------------------------------------ resolution order


def test_env_credentials_win_over_profiles(config_dir: Path) -> None:
    two_profiles(default="default")
    resolved = resolve_credentials(
        env(config_dir, MP_USERNAME="sa.env", MP_SECRET="env-secret", MP_PROJECT_ID="7",
            MP_REGION="IN", MPEXPORT_PROFILE="prod"),
        None, None, None,
    )
    assert resolved.source == "environment"
    assert resolved.profile is None
    assert resolved.credentials.username == "sa.env"
    assert resolved.credentials.project_id == 7
    assert resolved.region == "in"
    assert resolved.warnings == ()


def test_flags_override_env(config_dir: Path) -> None:
    resolved = resolve_credentials(
        env(config_dir, MP_USERNAME="u", MP_SECRET="s", MP_PROJECT_ID="7", MP_REGION="eu"),
        None, 99, "us",
    )
    assert resolved.credentials.project_id == 99
    assert resolved.region == "us"


def test_profile_flag_with_env_credentials_is_ambiguous(config_dir: Path) -> None:
    two_profiles()
    with pytest.raises(UsageError) as info:
        resolve_credentials(env(config_dir, MP_API_SECRET="x"), "prod", None, None)
    assert "MP_API_SECRET" in info.value.one_line()
    assert "--profile prod" in info.value.one_line()


def test_profile_flag_beats_mpexport_profile_and_default(config_dir: Path) -> None:
    two_profiles(default="default")
    resolved = resolve_credentials(env(config_dir, MPEXPORT_PROFILE="staging"), "prod",
                                   None, None)
    assert resolved.profile == "prod"
    assert resolved.credentials.username == "sa.prod"
    assert resolved.credentials.secret == PROD_SECRET
    assert resolved.credentials.project_id == 22
    assert resolved.region == "us"
    assert resolved.source == f"profile prod ({config_dir / 'config.toml'})"


def test_mpexport_profile_beats_default_profile(config_dir: Path) -> None:
    two_profiles(default="default")
    resolved = resolve_credentials(env(config_dir, MPEXPORT_PROFILE="staging"), None, None, None)
    assert resolved.profile == "staging"
    assert resolved.region == "eu"


def test_default_profile_key_beats_profile_named_default(config_dir: Path) -> None:
    write_profile("default", username="sa.d", secret="d" * 8, project_id=1)
    write_profile("prod", username="sa.prod", secret=PROD_SECRET, project_id=22,
                  make_default=True)
    assert resolve_credentials(env(config_dir), None, None, None).profile == "prod"


def test_profile_named_default_is_the_fallback(config_dir: Path) -> None:
    write_profile("default", username="sa.d", secret="d" * 8, project_id=1, make_default=False)
    write_profile("other", username="sa.o", secret="o" * 8, project_id=2, make_default=False)
    assert load_config().default_profile is None
    assert resolve_credentials(env(config_dir), None, None, None).profile == "default"


def test_flags_override_profile(config_dir: Path) -> None:
    two_profiles()
    resolved = resolve_credentials(env(config_dir), "staging", 123, "IN")
    assert resolved.credentials.project_id == 123
    assert resolved.region == "in"


def test_stray_project_and_region_vars_are_ignored_with_a_warning(config_dir: Path) -> None:
    two_profiles()
    resolved = resolve_credentials(env(config_dir, MP_PROJECT_ID="5", MP_REGION="in"),
                                   "staging", None, None)
    assert resolved.credentials.project_id == 11
    assert resolved.region == "eu"
    assert any("MP_PROJECT_ID and MP_REGION ignored" in w for w in resolved.warnings)


def test_legacy_secret_works_with_a_warning(config_dir: Path) -> None:
    write_profile("old", api_secret=LEGACY_SECRET)
    resolved = resolve_credentials(env(config_dir), None, None, None)
    assert resolved.credentials.basic_auth() == (LEGACY_SECRET, "")
    assert LEGACY_SECRET_WARNING in resolved.warnings
    assert LEGACY_SECRET_WARNING == (
        "Mixpanel retires project secrets on 2027-03-03; create a service account"
    )
    from_env = resolve_credentials(env(config_dir, MP_API_SECRET="abc"), None, None, None)
    assert from_env.warnings == (LEGACY_SECRET_WARNING,)


def test_service_account_preferred_over_api_secret_in_a_profile(config_dir: Path) -> None:
    write_profile("both", username="u", secret="s" * 8, project_id=3, api_secret="legacy")
    resolved = resolve_credentials(env(config_dir), None, None, None)
    assert resolved.credentials.is_service_account
    assert resolved.warnings == ()


# ------------------------------------------------------------------ errors


def test_missing_profile_names_the_file_and_the_profiles(config_dir: Path) -> None:
    path = two_profiles()
    with pytest.raises(UsageError) as info:
        resolve_credentials(env(config_dir), "prdo", None, None)
    text = info.value.one_line()
    assert "'prdo'" in text
    assert str(path) in text
    assert "prod, staging" in text
    assert "mpexport config init --profile prdo" in text


def test_missing_profile_from_mpexport_profile_says_who_named_it(config_dir: Path) -> None:
    with pytest.raises(UsageError) as info:
        resolve_credentials(env(config_dir, MPEXPORT_PROFILE="ci"), None, None, None)
    text = info.value.one_line()
    assert "MPEXPORT_PROFILE" in text
    assert f"{config_dir / 'config.toml'} does not exist" in text


def test_dangling_default_profile_is_a_usage_error(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "config.toml").write_text('default_profile = "gone"\n')
    with pytest.raises(UsageError, match="default_profile"):
        resolve_credentials(env(config_dir), None, None, None)


@pytest.mark.parametrize("with_file", [False, True])
def test_nothing_found_names_variables_and_config_init(config_dir: Path, with_file: bool) -> None:
    if with_file:
        write_profile("prod", username="u", secret="s" * 8, project_id=1, make_default=False)
    with pytest.raises(CredentialsError) as info:
        resolve_credentials(env(config_dir), None, None, None)
    text = info.value.one_line()
    for name in ("MP_USERNAME", "MP_SECRET", "MP_PROJECT_ID", "MP_API_SECRET",
                 "mpexport config init", str(config_dir / "config.toml")):
        assert name in text
    if with_file:
        assert "prod" in text


def test_invalid_toml_names_file_and_line(config_dir: Path) -> None:
    config_dir.mkdir()
    path = config_dir / "config.toml"
    path.write_text('[profiles.a]\nusername = "u"\nsecret = "unterminated\n')
    for call in (lambda: resolve_credentials(env(config_dir), None, None, None),
                 lambda: write_profile("b", api_secret="x"),
                 show_config):
        with pytest.raises(UsageError) as info:
            call()
        assert str(path) in info.value.message
        assert "line 3" in info.value.message
    # A broken file is never overwritten.
    assert "unterminated" in path.read_text()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nonsense = 1\n", "unknown top-level key"),
        ('[profiles.a]\nsecert = "x"\n', "unknown key(s) secert"),
        ("[profiles.a]\nproject_id = \"12\"\n", "project_id must be a positive integer"),
        ("[profiles.a]\nproject_id = true\n", "project_id must be a positive integer"),
        ('[profiles.a]\nregion = "mars"\n', "is not a region"),
        ("[profiles.a]\nusername = 5\n", "username must be a string"),
        ('[profiles."bad name"]\nusername = "u"\n', "invalid name"),
        ("profiles = 3\n", "must be a table"),
    ],
)
def test_bad_config_content_is_a_usage_error(config_dir: Path, text: str, fragment: str) -> None:
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(text)
    with pytest.raises(UsageError) as info:
        load_config()
    assert fragment in info.value.message
    assert str(config_dir / "config.toml") in info.value.message


def test_incomplete_profile_is_a_credentials_error(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "config.toml").write_text('[profiles.default]\nusername = "u"\n')
    with pytest.raises(CredentialsError, match="has no secret"):
        resolve_credentials(env(config_dir), None, None, None)
    (config_dir / "config.toml").write_text(
        f'[profiles.default]\nusername = "u"\nsecret = "{SA_SECRET}"\n')
    with pytest.raises(CredentialsError, match="no project_id"):
        resolve_credentials(env(config_dir), None, None, None)
    # --project-id completes it.
    assert resolve_credentials(env(config_dir), None, 8, None).credentials.project_id == 8


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "../etc", "prod.eu", "é", "a\n"])
def test_invalid_profile_names(config_dir: Path, name: str) -> None:
    with pytest.raises(UsageError, match="invalid profile name"):
        write_profile(name, api_secret="x")
    with pytest.raises(UsageError, match="invalid profile name"):
        resolve_credentials(env(config_dir), name, None, None)


def test_valid_profile_names(config_dir: Path) -> None:
    for name in ("a", "A-b_9", "x" * 64, "-", "123"):
        write_profile(name, api_secret="x")
    assert set(load_config().profiles) == {"a", "A-b_9", "x" * 64, "-", "123"}


def test_write_profile_checks_its_arguments() -> None:
    with pytest.raises(UsageError, match="both a username and a secret"):
        write_profile("p", username="u", project_id=1)
    with pytest.raises(UsageError, match="project id"):
        write_profile("p", username="u", secret="s")
    with pytest.raises(UsageError, match="nothing to save"):
        write_profile("p")
    with pytest.raises(UsageError, match="positive"):
        write_profile("p", username="u", secret="s", project_id=0)
    with pytest.raises(UsageError, match="not a region"):
        write_profile("p", api_secret="s", region="asia")


# ------------------------------------------------------------------ writing


@pytest.mark.skipif(not POSIX, reason="mode bits are POSIX only")
def test_written_file_is_0600_and_never_wider(config_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def checking_replace(src: Any, dst: Any) -> None:
        # The temp file, complete and about to become the config: private already.
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", checking_replace)
    old_umask = os.umask(0)  # even with no umask to help
    try:
        path = write_profile("prod", username="u", secret=SA_SECRET, project_id=1)
        write_profile("two", api_secret="x")
    finally:
        os.umask(old_umask)
    assert seen == [0o600, 0o600]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700


@pytest.mark.skipif(not POSIX, reason="mode bits are POSIX only")
def test_existing_world_readable_file_becomes_0600(config_dir: Path) -> None:
    config_dir.mkdir()
    path = config_dir / "config.toml"
    path.write_text(f'[profiles.old]\napi_secret = "{LEGACY_SECRET}"\n')
    path.chmod(0o644)
    resolved = resolve_credentials(env(config_dir), "old", None, None)
    assert any("chmod 600" in w for w in resolved.warnings)
    assert "chmod 600" in show_config()
    write_profile("new", api_secret="x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_preserves_other_profiles_and_default(config_dir: Path) -> None:
    path = two_profiles(default="main")
    write_profile("prod", username="sa.prod2", secret="rotated-secret", project_id=23,
                  region="eu")  # make_default=None: there is a default already
    loaded = load_config()
    assert loaded.default_profile == "main"
    assert set(loaded.profiles) == {"staging", "prod", "main"}
    assert loaded.profiles["staging"].secret == SA_SECRET
    assert loaded.profiles["staging"].region == "eu"
    assert loaded.profiles["prod"].secret == "rotated-secret"
    assert loaded.profiles["prod"].project_id == 23
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp left


def test_first_profile_becomes_default(config_dir: Path) -> None:
    write_profile("prod", api_secret="x")
    write_profile("other", api_secret="y")
    assert load_config().default_profile == "prod"
    write_profile("other", api_secret="y", make_default=True)
    assert load_config().default_profile == "other"


def test_failed_write_leaves_the_old_file_and_no_temp(config_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_profile("prod", username="u", secret=SA_SECRET, project_id=1)
    before = path.read_bytes()

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_profile("other", api_secret="x")
    assert path.read_bytes() == before
    assert [p.name for p in config_dir.iterdir()] == ["config.toml"]


TRICKY = [
    "",
    'quote " inside',
    "back\\slash \\n not a newline",
    'ends with backslash \\',
    "line\nbreak\r\nand\ttab",
    "unicode: é ü 日本語 🎉 \u2028 \u00a0",
    "control \x00\x01\x08\x0b\x0c\x1b[31m\x7f \x9f",
    "'''triple''' \"\"\"quotes\"\"\"",
    "# not a comment",
    "]] [[ = {}",
]


@pytest.mark.parametrize("value", TRICKY)
def test_toml_string_round_trips(value: str) -> None:
    text = f"key = {toml_string(value)}\n"
    assert tomllib.loads(text) == {"key": value}
    assert "\n" not in text[:-1]  # always one line
    assert "\x1b" not in text  # no terminal escapes


@given(st.text())
def test_toml_string_round_trips_any_text(value: str) -> None:
    assert tomllib.loads(f"key = {toml_string(value)}") == {"key": value}


def test_toml_string_rejects_lone_surrogates() -> None:
    with pytest.raises(UsageError):
        toml_string("bad \udcff")


@pytest.mark.parametrize("value", [v for v in TRICKY if v])
def test_profile_values_round_trip_through_the_file(config_dir: Path, value: str) -> None:
    write_profile("p", username=value, secret=value, project_id=2**63 - 1, api_secret=value)
    loaded = load_config().profiles["p"]
    assert (loaded.username, loaded.secret, loaded.api_secret) == (value, value, value)
    assert loaded.project_id == 2**63 - 1


# ------------------------------------------------------------------ showing


def test_show_config_masks_secrets(config_dir: Path) -> None:
    two_profiles(default="main")
    write_profile("old", api_secret=LEGACY_SECRET)
    text = show_config()
    for secret in (SA_SECRET, PROD_SECRET, LEGACY_SECRET, SA_SECRET[-4:], LEGACY_SECRET[-4:]):
        assert secret not in text
    assert 'default_profile = "main"' in text
    assert "[profiles.prod]" in text
    assert 'username = "sa.prod"' in text
    assert "secret = <hidden>" in text
    assert "api_secret = <hidden>" in text
    assert "project_id = 22" in text
    assert str(config_dir / "config.toml") in text


def test_show_config_without_a_file(config_dir: Path) -> None:
    text = show_config()
    assert "mpexport config init" in text
    assert str(config_dir / "config.toml") in text


def test_show_config_mentions_env_credentials(config_dir: Path) -> None:
    text = show_config(env(config_dir, MP_API_SECRET="zzz-env-secret", MPEXPORT_PROFILE="x"))
    assert "MP_API_SECRET" in text
    assert "zzz-env-secret" not in text
    assert 'MPEXPORT_PROFILE = "x"' in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=st.text(min_size=1), api_secret=st.text(min_size=1))
def test_show_config_reveals_only_presence(secret: str, api_secret: str) -> None:
    # The output is the same whatever the secrets are: it cannot leak them.
    with tempfile.TemporaryDirectory() as tmp:
        where = {"MPEXPORT_CONFIG_DIR": tmp}
        write_profile("p", username="u", secret="reference", project_id=1,
                      api_secret="reference", env=where)
        reference = show_config(where)
        write_profile("p", username="u", secret=secret, project_id=1,
                      api_secret=api_secret, env=where)
        assert show_config(where) == reference
        assert load_config(where).profiles["p"].secret == secret


@settings(max_examples=60, deadline=None)
@given(secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12))
def test_show_config_never_contains_the_secret(secret: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = {"MPEXPORT_CONFIG_DIR": tmp}
        write_profile("p", username="u", secret=secret, project_id=1, env=where)
        text = show_config(where)
        assert secret not in text
        assert secret[-4:] + '"' not in text


def test_profile_repr_hides_secrets(config_dir: Path) -> None:
    write_profile("p", username="u", secret=SA_SECRET, project_id=1, api_secret=LEGACY_SECRET)
    shown = repr(load_config())
    assert SA_SECRET not in shown and LEGACY_SECRET not in shown


# ------------------------------------------------------------------ reading the secret


@pytest.mark.parametrize("piped", ["s3cr3t\n", "s3cr3t\r\n", "  s3cr3t \n"])
def test_read_secret_from_piped_stdin(piped: str) -> None:
    stream = io.StringIO(piped + "second line is not read\n")
    assert read_secret(stdin=stream, is_tty=False) == "s3cr3t"
    assert stream.readline() == "second line is not read\n"


def test_read_secret_without_a_final_newline() -> None:
    assert read_secret(stdin=io.StringIO("s3cr3t"), is_tty=False) == "s3cr3t"


@pytest.mark.parametrize("piped", ["", "\n", "   \n"])
def test_read_secret_refuses_empty_stdin(piped: str) -> None:
    with pytest.raises(UsageError, match="no secret on stdin"):
        read_secret(stdin=io.StringIO(piped), is_tty=False)


def test_read_secret_detects_a_pipe() -> None:
    # StringIO.isatty() is False, as for a pipe.
    assert read_secret("API secret", stdin=io.StringIO("abc\n")) == "abc"


def test_read_secret_prompts_without_echo_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_prompt(text: str, **kwargs: Any) -> str:
        calls.append({"text": text, **kwargs})
        return " typed-secret "

    monkeypatch.setattr(click, "prompt", fake_prompt)
    stream = io.StringIO("must not be read\n")
    assert read_secret("Secret", stdin=stream, is_tty=True) == "typed-secret"
    assert calls == [{"text": "Secret", "hide_input": True, "err": True}]
    assert stream.read() == "must not be read\n"


# ------------------------------------------------------------------ OAuth tokens

TOKEN = "oauth-token-abcdef0123456789"


def test_a_profile_holding_a_token_resolves_to_a_bearer_token(config_dir: Path) -> None:
    path = write_profile("tok", oauth_token=f" {TOKEN}\n", project_id=9, region="eu")
    assert f'oauth_token = "{TOKEN}"' in path.read_text()  # stripped as it is saved
    resolved = resolve_credentials(env(config_dir), None, None, None)
    assert resolved.credentials.kind == "oauth_token"
    assert (resolved.credentials.oauth_token, resolved.credentials.project_id) == (TOKEN, 9)
    assert (resolved.region, resolved.warnings) == ("eu", ())
    assert resolved.source == f"profile tok ({path})"
    assert TOKEN not in repr(load_config().profiles["tok"])


def test_token_precedence_in_a_profile(config_dir: Path) -> None:
    write_profile("all", username="u", secret="s" * 8, project_id=3, api_secret="legacy",
                  oauth_token=TOKEN)
    assert resolve_credentials(env(config_dir)).credentials.kind == "service_account"
    write_profile("all", project_id=3, api_secret="legacy", oauth_token=TOKEN)
    resolved = resolve_credentials(env(config_dir))
    assert resolved.credentials.kind == "oauth_token"
    assert resolved.warnings == ()  # the legacy secret is there, but not used


def test_a_token_profile_without_a_project_or_with_a_bad_token(config_dir: Path) -> None:
    with pytest.raises(UsageError, match="an OAuth token needs a project id"):
        write_profile("p", oauth_token=TOKEN)
    with pytest.raises(UsageError, match="the OAuth token is not a token: it starts with"):
        write_profile("p", oauth_token=f"Bearer {TOKEN}", project_id=1)
    config_dir.mkdir()
    (config_dir / "config.toml").write_text(f'[profiles.default]\noauth_token = "{TOKEN}"\n')
    with pytest.raises(CredentialsError) as info:
        resolve_credentials(env(config_dir))
    assert info.value.one_line() == (
        f"profile default in {config_dir / 'config.toml'} has an OAuth token but no "
        "project_id (add project_id to the profile or pass --project-id)")
    assert resolve_credentials(env(config_dir), None, 8, None).credentials.project_id == 8
    (config_dir / "config.toml").write_text(
        f'[profiles.default]\nproject_id = 1\noauth_token = "{TOKEN} x"\n')
    with pytest.raises(UsageError) as bad:
        load_config()
    assert bad.value.message == (
        f"{config_dir / 'config.toml'}: profile 'default': oauth_token is not a token: it "
        "holds a space, a control or a non-ASCII character")
    assert TOKEN not in bad.value.one_line()


def test_show_config_masks_a_token(config_dir: Path) -> None:
    write_profile("tok", oauth_token=TOKEN, project_id=9)
    text = show_config(env(config_dir, MP_OAUTH_TOKEN="env-token-0000"))
    assert "[profiles.tok]\nproject_id = 9\noauth_token = <hidden>\n" in text
    assert "# set in the environment, used instead of any profile: MP_OAUTH_TOKEN\n" in text
    for secret in (TOKEN, TOKEN[-4:], "env-token-0000"):
        assert secret not in text


@settings(max_examples=40, deadline=None)
@given(token=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                     min_size=1))
def test_show_config_reveals_only_that_a_token_is_set(token: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = {"MPEXPORT_CONFIG_DIR": tmp}
        write_profile("p", oauth_token="reference", project_id=1, env=where)
        reference = show_config(where)
        write_profile("p", oauth_token=token, project_id=1, env=where)
        assert show_config(where) == reference
        assert load_config(where).profiles["p"].oauth_token == token
