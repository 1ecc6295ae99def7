"""``python -m hub.cli``: the same as the ``peershop`` command."""

from hub.cli import main

main()
