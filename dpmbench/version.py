"""The package version (a leaf, so that provenance records can name it without importing the package's API)."""

__version__ = "0.1.0"
