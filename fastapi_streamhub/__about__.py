"""The package version, defined here only (hatch reads it for the build)."""

__version__ = "0.1.0"
