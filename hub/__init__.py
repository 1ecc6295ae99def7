"""peershop hub: the core of a makerspace run as a peer project.

The subpackages are its layers, each allowed to import only those below it (see
docs/architecture.md and the import-linter contracts in pyproject.toml): cli, then
service, shopfile, admin and ledger, store and plugs, rules, peerconomy, contract.  The
base modules config, errors, checks, private_files and systemd stand beside them.
"""

__version__ = "0.1.0"
