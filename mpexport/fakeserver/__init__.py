"""A local, Mixpanel-compatible export and engage server for tests, demos and benchmarks."""

from mpexport.fakeserver.config import (
    DEMO_API_SECRET,
    DEMO_OAUTH_TOKEN,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    FAULT_KINDS,
    ServerConfig,
)
from mpexport.fakeserver.dataset import PROFILES, Dataset, parse_line
from mpexport.fakeserver.profiles import ProfileDataset
from mpexport.fakeserver.realistic import ODDITY_KINDS
from mpexport.fakeserver.server import FakeMixpanelServer

__all__ = [
    "DEMO_API_SECRET",
    "DEMO_OAUTH_TOKEN",
    "DEMO_PROJECT_ID",
    "DEMO_SECRET",
    "DEMO_USERNAME",
    "FAULT_KINDS",
    "ODDITY_KINDS",
    "PROFILES",
    "Dataset",
    "FakeMixpanelServer",
    "ProfileDataset",
    "ServerConfig",
    "parse_line",
]
