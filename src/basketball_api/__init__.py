"""basketball-api: orders, Stripe Checkout payments and stranded-order monitoring."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("basketball-api")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
