"""The running hub (``peershop run``): ``service`` (the :class:`~hub.service.service.Hub`
with its threads: ingest, rules, outbox, period jobs), ``broker`` (a private Mosquitto)
and ``homeassistant`` (MQTT discovery for Home Assistant).

May import: hub.shopfile, hub.admin, hub.ledger, hub.store, hub.plugs, hub.rules,
hub.peerconomy, hub.contract, the base modules.
"""
