"""The accounts of the peer project: ``periods`` (boundaries, corrections),
``closing`` (the period close and what it stored), ``reservations`` (scarce slots and
their auction), ``taskboard`` (tasks, claims, confirmations) and ``export``.

May import: hub.store, hub.rules, hub.peerconomy, hub.contract, the base modules.
"""
