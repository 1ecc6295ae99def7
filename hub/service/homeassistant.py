"""Home Assistant MQTT discovery: each tool's state, power, energy and user in Home Assistant.

With ``homeassistant.discovery = true`` the hub publishes retained discovery configs
(``{prefix}/sensor/peershop_{tool}/{field}/config``) that point Home Assistant at the
hub's own retained ``peershop/tool/{tool}/state``; nothing else is published twice.  They
are sent again whenever Home Assistant announces itself (``{prefix}/status`` =
``online``), as its documentation asks, and when the shop's tools change.  A config the
hub no longer announces (a tool that is gone, a sensor a tool no longer has) is taken
back with an empty retained message, also when the hub finds it on the broker after a
restart.

Power and energy are *unavailable* while the hub is offline or the tool's meter has not
reported, never 0 W: a value Home Assistant would store as a real reading.  The energy
sensor (``total_increasing`` in Wh, for the Energy dashboard) is published for metered
tools only: those bound to a smart plug, or with a device whose birth lists ``power``.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from hub.contract.messages import HUB_STATUS_TOPIC, tool_state_topic
from hub.rules.records import Message, ShopData, ToolConfig

HUB_ONLINE = {
    "topic": HUB_STATUS_TOPIC,
    "value_template": "{{ value_json.state }}",
    "payload_available": "online",
    "payload_not_available": "offline",
}


def _known(key: str) -> str:
    """An availability template: online while the tool state's ``key`` is a number (not
    null, and not missing, as ``wh_total`` is until the tool's meter has reported)."""
    return f"{{{{ 'online' if value_json.{key} is number else 'offline' }}}}"


FIELDS: dict[str, dict[str, Any]] = {
    "state": {"name": "state", "value_template": "{{ value_json.state }}", "icon": "mdi:tools"},
    "power": {
        "name": "power",
        "value_template": "{{ value_json.w }}",
        "device_class": "power",
        "state_class": "measurement",
        "unit_of_measurement": "W",
    },
    "energy": {
        "name": "energy",
        "value_template": "{{ value_json.wh_total }}",
        "device_class": "energy",
        "state_class": "total_increasing",
        "unit_of_measurement": "Wh",
    },
    "user": {
        "name": "user",
        "value_template": "{{ value_json.member if value_json.member else '' }}",
        "icon": "mdi:account",
    },
}
METERED_ONLY = frozenset({"energy"})
READING = {"power": "w", "energy": "wh_total"}  # the state field each reading needs


def birth_topic(prefix: str) -> str:
    return f"{prefix}/status"


def config_filter(prefix: str) -> str:
    """The subscription that finds the discovery configs left on the broker."""
    return f"{prefix}/sensor/+/+/config"


def is_config_topic(prefix: str, topic: str) -> bool:
    """Whether ``topic`` is a sensor's discovery config under ``prefix`` (any sensor's:
    :meth:`Discovery.found` picks out the hub's own)."""
    parts = topic.split("/")
    return (
        topic.startswith(f"{prefix}/sensor/")
        and len(parts) == prefix.count("/") + 5
        and (parts[-1] == "config")
    )


def entity_id(tool_id: str, field: str) -> str:
    """The entity id Home Assistant should give a sensor (``default_entity_id``):
    lowercase letters, digits and single underscores, as its entity ids must be."""
    slug = re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", tool_id.lower())).strip("_")
    return f"sensor.peershop_{slug}_{field}"


def config_topic(prefix: str, tool_id: str, field: str) -> str:
    return f"{prefix}/sensor/peershop_{tool_id}/{field}/config"


def _fields(tool: ToolConfig) -> list[str]:
    return [f for f in FIELDS if tool.metered or f not in METERED_ONLY]


def discovery_messages(data: ShopData, prefix: str = "homeassistant") -> list[Message]:
    """The retained config of every tool's sensors."""
    messages = []
    for tool in sorted(data.tools.values(), key=lambda t: t.id):
        device = {
            "identifiers": [f"peershop_{tool.id}"],
            "name": tool.name,
            "manufacturer": "peershop",
            "model": f"{tool.rules.policy} tool",
        }
        for field in _fields(tool):
            availability = [HUB_ONLINE]
            if field in READING:
                state = tool_state_topic(tool.id)
                availability = [
                    HUB_ONLINE,
                    {
                        "topic": state,
                        "value_template": _known(READING[field]),
                        "payload_available": "online",
                        "payload_not_available": "offline",
                    },
                ]
            config: dict[str, Any] = {
                **FIELDS[field],
                "unique_id": f"peershop_{tool.id}_{field}",
                "default_entity_id": entity_id(tool.id, field),
                "state_topic": tool_state_topic(tool.id),
                "availability": availability,
                "availability_mode": "all",
                "device": device,
            }
            if field == "state":
                config["json_attributes_topic"] = tool_state_topic(tool.id)
            topic = config_topic(prefix, tool.id, field)
            messages.append(
                Message(topic, json.dumps(config, sort_keys=True).encode(), retain=True)
            )
    return messages


class Discovery:
    """What the hub has announced to Home Assistant, and what it has to take back.

    >>> d = Discovery("homeassistant")
    >>> d.found("homeassistant/sensor/peershop_gone/power/config", b"{}", ShopData())
    [Message(topic='homeassistant/sensor/peershop_gone/power/config', payload=b'', \
retain=True, qos=1)]
    """

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._announced: set[str] = set()
        self._lock = threading.Lock()  # announced from the network thread and on reloads

    def announce(self, data: ShopData) -> list[Message]:
        """Every current config, and an empty retained message for each config
        announced before that is no longer current."""
        messages = discovery_messages(data, self.prefix)
        current = {m.topic for m in messages}
        with self._lock:
            gone = sorted(self._announced - current)
            self._announced = current
        return messages + [Message(topic, b"", retain=True) for topic in gone]

    def found(self, topic: str, payload: bytes, data: ShopData) -> list[Message]:
        """A discovery config seen on the broker (a retained one, left from before a
        restart, or our own coming back): taken back if the hub no longer has it."""
        head = f"{self.prefix}/sensor/peershop_"
        if not payload or not topic.startswith(head) or not topic.endswith("/config"):
            return []
        # {head}{tool}/{field}/config; the hub's own configs come back here too, one per
        # sensor, so this looks the tool up rather than building every config again
        parts = topic[len(head) :].split("/")  # tool, field, "config"
        if len(parts) != 3:
            return []  # not a shape the hub ever publishes
        tool_id, field, _ = parts
        tool = data.tools.get(tool_id)
        if tool is not None and field in _fields(tool):
            return []
        return [Message(topic, b"", retain=True)]
