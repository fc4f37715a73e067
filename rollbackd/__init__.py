"""rollbackd: undo a bad Kubernetes Deployment change when its metrics breach, and say why."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rollbackd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
