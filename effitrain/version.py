"""The package version (a leaf module: anything inside the package may import it)."""
__version__ = "0.1.0"
