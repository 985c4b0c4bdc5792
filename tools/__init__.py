"""Developer tools for convnet itself (not part of the library): ``python -m tools.mutants``."""
