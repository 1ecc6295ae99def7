"""The shop file (``peershop load shop.yaml``): ``spec`` (what a checked file holds),
``parse`` (reading and checking it, every problem with its line), ``apply`` (upserting it
into the database) and ``tool_admin`` (one tool edited in Admin by the same rules).

May import: hub.admin, hub.store, hub.rules, hub.peerconomy, hub.contract, the base
modules.
"""
