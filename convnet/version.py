"""convnet's version (a module of its own, so that saving and export can read it without importing the package)."""
__version__ = "0.1.0"
