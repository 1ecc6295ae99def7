"""The wire: what hub, devices and bridges say to each other over MQTT.

``messages`` (the payloads, topics, ids and timestamps of docs/contract), ``allowlist``
(signing and checking the allow-lists a reader keeps for when the hub is away) and
``mqtt`` (the one MQTT link every process speaks through).  This is the only part of
hub/ that devices/ and firmware_bridge/ import, besides the base modules hub/config.py,
hub/errors.py, hub/checks.py, hub/private_files.py and hub/systemd.py.

May import: the base modules, paho-mqtt, cryptography.  Nothing else of hub/.
"""
