"""The one list of Mixpanel's data residency regions and their hosts.

A module of constants only: the CLI's ``--region`` choices come from here, and
``--help`` imports it, so it imports nothing.
"""

REGION_HOSTS = {
    "us": "https://data.mixpanel.com",
    "eu": "https://data-eu.mixpanel.com",
    "in": "https://data-in.mixpanel.com",
}
REGIONS = tuple(REGION_HOSTS)
DEFAULT_REGION = "us"
# The Query API (profiles: engage) lives on other hosts than the export API.
QUERY_HOSTS = {
    "us": "https://mixpanel.com",
    "eu": "https://eu.mixpanel.com",
    "in": "https://in.mixpanel.com",
}
