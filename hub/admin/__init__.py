"""Running a shop's installation: ``credentials`` (MQTT accounts and the broker's
files), ``enrol`` (an unknown badge to a member), ``backup`` (and restore), ``sites``
(several sites on one central broker) and ``rebuild`` (records replayed from the event
log).

May import: hub.store, hub.rules, hub.peerconomy, hub.contract, the base modules.
"""
