"""A local, Mixpanel-compatible raw export server for tests, demos and benchmarks."""

from mpexport.fakeserver.config import (
    DEMO_API_SECRET,
    DEMO_PROJECT_ID,
    DEMO_SECRET,
    DEMO_USERNAME,
    FAULT_KINDS,
    ServerConfig,
)
from mpexport.fakeserver.dataset import Dataset
from mpexport.fakeserver.server import FakeMixpanelServer

__all__ = [
    "DEMO_API_SECRET",
    "DEMO_PROJECT_ID",
    "DEMO_SECRET",
    "DEMO_USERNAME",
    "FAULT_KINDS",
    "Dataset",
    "FakeMixpanelServer",
    "ServerConfig",
]
