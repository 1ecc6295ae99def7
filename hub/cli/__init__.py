"""TODO"""

from hub.cli.commands import main

__all__ = ["main"]
