"""The ``relay`` command line: one module per command family, wired in ``main``."""
