"""``mpexport config show``'s text: the config file with every secret masked."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mpexport.config.load import load_config
from mpexport.config.private_file import mode_warning
from mpexport.config.profiles import SECRET_KEYS, profile_items
from mpexport.config.render import toml_string, toml_value
from mpexport.config.resolve import CREDENTIAL_VARS, PROFILE_ENV, is_set
from mpexport.mixpanel.credentials import ENV_PROJECT_ID, ENV_REGION

MASK = "<hidden>"


def show_config(env: Mapping[str, str] | None = None) -> str:
    """The config as text for ``mpexport config show``, every secret masked.

    A set secret shows as ``secret = <hidden>`` whatever its value or length
    (deliberately not TOML, so it cannot be pasted back as a secret); an empty
    one is simply absent. Other strings are TOML-escaped, so control
    characters cannot reach the terminal.
    """
    env = os.environ if env is None else env
    config = load_config(env)
    lines = [f"# {config.path}"]
    set_vars = [v for v in (*CREDENTIAL_VARS, ENV_PROJECT_ID, ENV_REGION) if is_set(env, v)]
    if any(v in set_vars for v in CREDENTIAL_VARS):
        lines.append(
            f"# set in the environment, used instead of any profile: {', '.join(set_vars)}"
        )
    if is_set(env, PROFILE_ENV):
        lines.append(f"# {PROFILE_ENV} = {toml_string(env[PROFILE_ENV])}")
    if not config.exists:
        lines.append(
            "# (no config file; create one with: "
            "mpexport config init --profile NAME --username USER --project-id ID)"
        )
        return "\n".join(lines) + "\n"
    too_open = mode_warning(config.path)
    if too_open:
        lines.append(f"# warning: {too_open}")
    lines.append("")
    if config.default_profile:
        lines += [f"default_profile = {toml_string(config.default_profile)}", ""]
    for name in sorted(config.profiles):
        lines.append(f"[profiles.{name}]")
        for key, value in profile_items(config.profiles[name]):
            shown = MASK if key in SECRET_KEYS else toml_value(value)
            lines.append(f"{key} = {shown}")
        lines.append("")
    if not config.profiles:
        lines.append("# (no profiles)")
    return "\n".join(lines).rstrip("\n") + "\n"
