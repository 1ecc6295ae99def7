"""Smart plugs (Tasmota, Shelly): their MQTT topics and payloads, decoded into the
contract's events and statuses for the rules.

May import: hub.contract, hub.rules, the base modules.
"""
