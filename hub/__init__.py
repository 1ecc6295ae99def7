"""peershop hub: the core of a makerspace run as a peer project."""

__version__ = "0.1.0"
