"""Several sites, one shop: one hub per site, one database, brokers bridged to a central one.

Each hub runs the tools and stations of its own ``site.id`` (``site:`` in the shop file):
it decides their badges, keeps their sessions and stores their events.  Members,
badges, trainings and tasks are the whole shop's, so a member trained at one site is
recognised at every other as soon as that hub reloads (``shop_version``, a few seconds).

Each site's Mosquitto bridges the device traffic to a central Mosquitto (see
deploy/two-sites.md and :func:`bridge_conf`), where a central view or another site can see
it.  A hub that receives another site's device traffic too (a bridge in both directions)
leaves it alone: the devices bound to other sites are that site hub's
(:func:`other_site_devices`).  A device bound nowhere is stored by every hub that hears
it, and the event identity ``(device, boot, seq)`` keeps each of its events once.

>>> print(bridge_conf("north", "central.lan", 1883))  # doctest: +ELLIPSIS
# Bridge of site north to the central broker ...
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.store.models import Station, Tool, ToolBinding

BRIDGE_FILE = "bridge-central.conf"
INCLUDE_DIR = "conf.d"  # beside mosquitto.conf; `peershop mosquitto-config` includes it
DIRECTIONS = ("out", "both")


def other_site_devices(session: Session, site: str) -> frozenset[str]:
    """The MQTT devices bound to tools or stations of other sites than ``site``."""
    bound = session.scalars(
        select(ToolBinding.ref)
        .join(Tool, Tool.id == ToolBinding.tool_id)
        .where(ToolBinding.kind == "device", Tool.site != site)
    )
    stations = session.scalars(select(Station.device_id).where(Station.site != site))
    return frozenset([*bound, *stations])


def hub_status_remote(site: str) -> str:
    """Where a site hub's retained ``peershop/hub/status`` appears on the central broker."""
    return f"peershop/site/{site}/hub/status"


def bridge_conf(
    site: str,
    central_host: str,
    central_port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    cafile: str | Path | None = None,
    direction: str = "out",
) -> str:
    """The Mosquitto bridge section of site ``site``'s broker to the central broker.

    Device events and statuses (``direction`` ``out``, or ``both`` so this site's hub
    and floor also hear the other sites) and tool states go to central under their own
    topics: device and tool ids are unique in the shop.  The hub's status is per site,
    so it goes to ``peershop/site/{site}/hub/status``.  Commands and allow-lists are not
    bridged: each device hears only its own site's hub.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    lines = [
        f"# Bridge of site {site} to the central broker (deploy/two-sites.md).",
        "# Written by `peershop bridge-config`; change it through that command.",
        f"connection peershop-site-{site}",
        f"address {central_host}:{central_port}",
        f"remote_clientid peershop-bridge-{site}",
        # Central keeps what it owes this bridge while the link is down, and the bridge
        # keeps what it owes central: QoS 1 both ways, nothing lost over a Wi-Fi gap.
        "cleansession false",
        "bridge_protocol_version mqttv311",
        # Mosquitto to Mosquitto: central never sends a message back over the bridge it
        # came in on, so a bridge in both directions makes no loop.
        "try_private true",
        "restart_timeout 2 30",
        f"notification_topic peershop/site/{site}/bridge",
    ]
    if username:
        lines.append(f"remote_username {username}")
    if password:
        lines.append(f"remote_password {password}")
    if cafile:
        lines.append(f"bridge_cafile {Path(cafile).resolve()}")
    lines += [
        f"topic peershop/dev/+/event {direction} 1",
        f"topic peershop/dev/+/status {direction} 1",
        "topic peershop/tool/+/state out 1",
        f"topic status out 1 peershop/hub/ peershop/site/{site}/hub/",
        "",
    ]
    return "\n".join(lines)
