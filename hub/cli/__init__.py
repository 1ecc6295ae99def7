"""The ``peershop`` command: the composition root.

It wires everything together (hub/, web/, devices/, firmware_bridge/): ``commands`` (the
top command and the hub's own subcommands), ``context`` (config, logging, database),
``ops_cli`` (devices, broker, backup, migrate, bridge-config), ``ledger_cli`` (period,
export, simulate), ``web_cli`` (tokens, users) and ``demo``.

May import anything.  Nothing imports it (tests aside): a layer that needs something
from here has it moved down to where it belongs.
"""

from hub.cli.commands import main

__all__ = ["main"]
