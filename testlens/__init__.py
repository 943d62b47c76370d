"""testlens: self-hosted test intelligence for CI."""

__version__ = "0.1.0"
