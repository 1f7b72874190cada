"""The command-line interface.

Ray reads its auth mode when it is imported, so the CLI decides it here, before any
module imports Ray: token authentication stays on unless the user chose otherwise.
"""

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
