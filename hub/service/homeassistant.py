"""Home Assistant MQTT discovery: each tool's state, power and user in Home Assistant.

With ``homeassistant.discovery = true`` the hub publishes retained discovery configs
(``{prefix}/sensor/peershop_{tool}/{field}/config``) that point Home Assistant at the
hub's own retained ``peershop/tool/{tool}/state``; nothing else is published twice.  They
are sent again whenever Home Assistant announces itself (``{prefix}/status`` =
``online``), as its documentation asks, and when the shop's tools change.
"""

from __future__ import annotations

import json
from typing import Any

from hub.contract.messages import HUB_STATUS_TOPIC, tool_state_topic
from hub.rules.records import Message, ShopData

FIELDS = {
    "state": {"name": "state", "value_template": "{{ value_json.state }}", "icon": "mdi:tools"},
    "power": {
        "name": "power",
        "value_template": "{{ value_json.w if value_json.w is not none else 0 }}",
        "device_class": "power",
        "state_class": "measurement",
        "unit_of_measurement": "W",
    },
    "user": {
        "name": "user",
        "value_template": "{{ value_json.member if value_json.member else '' }}",
        "icon": "mdi:account",
    },
}


def birth_topic(prefix: str) -> str:
    return f"{prefix}/status"


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
        for field, spec in FIELDS.items():
            config: dict[str, Any] = {
                **spec,
                "unique_id": f"peershop_{tool.id}_{field}",
                "object_id": f"peershop_{tool.id}_{field}",
                "state_topic": tool_state_topic(tool.id),
                "availability_topic": HUB_STATUS_TOPIC,
                "availability_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
            }
            if field == "state":
                config["json_attributes_topic"] = tool_state_topic(tool.id)
            topic = f"{prefix}/sensor/peershop_{tool.id}/{field}/config"
            messages.append(
                Message(topic, json.dumps(config, sort_keys=True).encode(), retain=True)
            )
    return messages
