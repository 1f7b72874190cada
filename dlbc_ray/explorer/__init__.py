"""`dlbc-ray explorer`: a read-only web app over a home's ledger and its live network."""

from dlbc_ray.explorer.app import create_app
from dlbc_ray.explorer.live import ClusterPoller, DemoFeed, LiveState

__all__ = ["ClusterPoller", "DemoFeed", "LiveState", "create_app"]
