"""Where the config file lives: ``$MPEXPORT_CONFIG_DIR`` or the user's config directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

CONFIG_DIR_ENV = "MPEXPORT_CONFIG_DIR"
CONFIG_FILENAME = "config.toml"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$MPEXPORT_CONFIG_DIR`` or the platform's user config dir for mpexport."""
    env = os.environ if env is None else env
    override = env.get(CONFIG_DIR_ENV)
    if override:
        return Path(override).expanduser()
    # appauthor=False: %LOCALAPPDATA%\mpexport on Windows, not ...\mpexport\mpexport.
    return platformdirs.user_config_path("mpexport", appauthor=False)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file's path (it may not exist)."""
    return config_dir(env) / CONFIG_FILENAME
