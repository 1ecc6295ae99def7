"""The node side of docs/serial-protocol.md (firmware_bridge/firmware/), driven under CPython.

A fake clock and a fake link stand in for the board: no sleeps, no serial port.  The
link decodes what the node writes with the host's framing, as the bridge would.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_bridge.firmware import main as firmware_main
from firmware_bridge.firmware import protocol
from firmware_bridge.firmware.rdm6300 import Rdm6300
from firmware_bridge.framing import FrameDecoder, encode_frame

FIRMWARE = Path(protocol.__file__).parent


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


class Link:
    """The bridge's view of the wire: every frame the node wrote, decoded."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.frames: list[dict] = []

    def write(self, data: bytes) -> None:
        self.frames.extend(self.decoder.feed(data))

    def take(self) -> list[dict]:
        frames, self.frames = self.frames, []
        return frames


def events(frames: list[dict]) -> list[tuple[int, int]]:
    return [(f["boot"], f["seq"]) for f in frames if f["t"] == "ev"]


def ack(seq: int, boot: int | None = None) -> bytes:
    obj = {"t": "ack", "seq": seq} if boot is None else {"t": "ack", "boot": boot, "seq": seq}
    return encode_frame(obj)


def cmd(hseq: int, **fields) -> bytes:
    return encode_frame({"t": "cmd", "hseq": hseq, **fields})


def make_node(store, clock: Clock, link: Link, **kwargs) -> protocol.Node:
    node = protocol.Node("lathe-node", "1.0", link.write, store, clock, **kwargs)
    node.start()
    return node


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def link() -> Link:
    return Link()


@pytest.fixture
def store(tmp_path: Path) -> protocol.FileStore:
    return protocol.FileStore(str(tmp_path / "flash"))


def test_hello_first_then_events_numbered_from_zero(store, clock, link):
    node = make_node(store, clock, link, kind=["reader"])
    assert node.send_event("badge", uid="0F00C1D1E2") == 0
    assert node.send_event("power", w=812.4) == 1
    assert link.take() == [
        {"t": "hello", "id": "lathe-node", "boot": 0, "fw": "1.0", "kind": ["reader"]},
        {"t": "ev", "boot": 0, "seq": 0, "type": "badge", "uid": "0F00C1D1E2"},
        {"t": "ev", "boot": 0, "seq": 1, "type": "power", "w": 812.4},
    ]


def test_a_node_with_a_clock_says_it_in_hello_and_in_every_event(store, clock, link):
    wall = [1795709703.1234]  # an RTC set by NTP: Unix seconds
    node = make_node(store, clock, link, wall_clock=lambda: wall[0])
    node.send_event("badge", uid="0F00C1D1E2")
    wall[0] += 60
    node.send_event("power", w=12.0, ts=1795700000)  # one the application stamped itself
    hello, badge, power = link.take()
    assert (hello["t"], hello["ts"]) == ("hello", 1795709703.123)
    assert (badge["ts"], power["ts"]) == (1795709703.123, 1795700000)
    # without a clock (the reference node) there is no ts anywhere
    make_node(protocol.MemoryStore(), clock, link).send_event("badge", uid="0F00C1D1E2")
    assert all("ts" not in frame for frame in link.take())


def test_every_start_is_a_new_boot_and_seq_starts_over(store, clock, link):
    for boot in range(3):
        node = make_node(store, clock, link)
        assert node.boot == boot
        assert node.send_event("button", name="start") == 0
        node.feed(ack(0))
    hellos = [f for f in link.take() if f["t"] == "hello"]
    assert [h["boot"] for h in hellos] == [0, 1, 2]


def test_an_unacked_event_is_resent_after_500_ms_until_acked(store, clock, link):
    node = make_node(store, clock, link)
    node.send_event("badge", uid="0F00C1D1E2")
    first = link.take()[-1]
    clock.advance(499)
    node.poll()
    assert link.take() == []
    clock.advance(1)
    node.poll()
    assert link.take() == [first]  # the same event, boot and seq: a duplicate to the hub
    clock.advance(500)
    node.poll()
    assert events(link.take()) == [(0, 0)]
    node.feed(ack(0))
    clock.advance(5000)
    node.poll()
    assert link.take() == []
    assert node.unacked == 0


def test_at_most_eight_unacked_further_events_wait_their_turn(store, clock, link):
    node = make_node(store, clock, link)
    for i in range(12):
        node.send_event("power", w=float(i))
    assert events(link.take()) == [(0, s) for s in range(8)]
    assert (node.unacked, node.queued) == (8, 4)
    clock.advance(500)
    node.poll()  # resends cover the window only
    assert events(link.take()) == [(0, s) for s in range(8)]
    node.feed(ack(3))  # acks may come out of order: one ack, one more on the wire
    assert events(link.take()) == [(0, 8)]
    node.feed(ack(0) + ack(1) + ack(2))
    assert events(link.take()) == [(0, 9), (0, 10), (0, 11)]
    assert (node.unacked, node.queued) == (8, 0)


def test_an_ack_for_nothing_in_flight_changes_nothing(store, clock, link):
    node = make_node(store, clock, link)
    node.send_event("power", w=1.0)
    node.feed(ack(7) + ack(0, boot=5) + encode_frame({"t": "ack", "seq": "0"}))
    assert node.unacked == 1
    assert node.counters["stray_acks"] == 2
    assert node.counters["ignored"] == 1


def test_a_command_is_acked_every_time_and_delivered_once(store, clock, link):
    got = []
    node = make_node(store, clock, link, on_command=got.append)
    link.take()
    grant = cmd(5, re=0, action="grant", member="Ada L.", max_s=14400)
    node.feed(grant)
    clock.advance(500)
    node.feed(grant)  # the bridge missed our ack and resent
    node.feed(grant[:10] + b"\x00" + grant[11:])  # a corrupted copy: dropped, not acked
    assert got == [{"re": 0, "action": "grant", "member": "Ada L.", "max_s": 14400}]
    assert link.take() == [{"t": "ack", "hseq": 5}, {"t": "ack", "hseq": 5}]
    node.feed(cmd(6, re=1, action="deny", reason="not_trained"))
    assert got[-1] == {"re": 1, "action": "deny", "reason": "not_trained"}
    assert node.counters["duplicate_commands"] == 1
    assert node.decoder.counters["bad_crc"] + node.decoder.counters["bad_json"] == 1


def test_a_command_without_an_integer_hseq_is_ignored(store, clock, link):
    got = []
    node = make_node(store, clock, link, on_command=got.append)
    link.take()
    node.feed(encode_frame({"t": "cmd", "action": "grant"}) + cmd(True, action="grant"))
    assert got == []
    assert link.take() == []


def test_a_command_that_breaks_the_app_becomes_a_fault_event(store, clock, link):
    def broken(command):
        raise KeyError("member")

    node = make_node(store, clock, link, on_command=broken)
    link.take()
    node.feed(cmd(1, re=0, action="grant"))
    frames = link.take()
    assert frames[0] == {"t": "ack", "hseq": 1}
    assert frames[1]["type"] == "fault"
    assert frames[1]["code"] == "command_failed"
    node.feed(cmd(2, action="release"))  # the node keeps going
    assert link.take()[0] == {"t": "ack", "hseq": 2}


def test_rebirth_resends_hello_and_the_unacked_events_at_once(store, clock, link):
    node = make_node(store, clock, link)
    node.send_event("power", w=5.0)
    link.take()
    clock.advance(100)
    node.feed(cmd(9, action="rebirth"))
    frames = link.take()
    assert frames[0] == {"t": "ack", "hseq": 9}
    assert frames[1]["t"] == "hello"
    assert events(frames) == [(0, 0)]


def test_reboot_replays_stored_events_with_their_boot_and_seq(store, clock, link):
    node = make_node(store, clock, link)
    for i in range(11):
        node.send_event("power", w=float(i))
    node.feed(ack(0) + ack(1))
    link.take()
    # Power cut: the old Node object is gone; what is left is the flash.
    clock = Clock()
    node = make_node(store, clock, link)
    assert node.boot == 1
    frames = link.take()
    assert frames[0] == {"t": "hello", "id": "lathe-node", "boot": 1, "fw": "1.0"}
    replayed = [f for f in frames if f["t"] == "ev"]
    assert [(f["boot"], f["seq"], f["w"]) for f in replayed] == [
        (0, s, float(s)) for s in range(2, 10)
    ]
    assert all(f["replay"] is True for f in replayed)
    # New events are boot 1 from seq 0, behind the replay, and live.
    assert node.send_event("badge", uid="0F00C1D1E2") == 0
    node.feed(b"".join(ack(s, boot=0) for s in range(2, 11)))
    frames = link.take()
    assert events(frames) == [(0, 10), (1, 0)]
    assert "replay" not in frames[-1]


def test_acked_events_are_not_replayed_and_torn_lines_are_skipped(store, clock, link):
    node = make_node(store, clock, link)
    node.send_event("power", w=1.0)
    node.send_event("power", w=2.0)
    node.feed(ack(0))
    store.append("outbox", 'E {"boot":0,"seq":2,"ty')  # power cut during a write
    link.take()
    node = make_node(store, clock, link)
    assert events(link.take()) == [(0, 1)]


def test_a_bare_ack_never_clears_the_wrong_boot(store, clock, link):
    node = make_node(store, clock, link)
    node.send_event("power", w=1.0)
    node = make_node(store, clock, link)  # boot 1 replays (0, 0)
    node.send_event("power", w=2.0)  # (1, 0) must wait: {"t":"ack","seq":0} would be ambiguous
    assert events(link.take()) == [(0, 0), (0, 0)]
    node.feed(ack(0))
    assert events(link.take()) == [(1, 0)]
    node.feed(ack(0))
    assert (node.unacked, node.queued) == (0, 0)


def test_a_lost_boot_file_does_not_reuse_a_boot_number(store, clock, link):
    node = make_node(store, clock, link)
    node = make_node(store, clock, link)
    node.send_event("power", w=1.0)
    Path(store.directory, "boot").unlink()
    node = make_node(store, clock, link)
    assert node.boot == 2


def test_events_held_back_by_an_outage_go_out_as_replay(store, clock, link):
    node = make_node(store, clock, link)
    node.send_event("badge", uid="0F00C1D1E2")
    assert "replay" not in link.take()[-1]
    clock.advance(10_000)  # no bridge: nothing acks for ten seconds
    node.poll()
    assert link.take() == [
        {"t": "ev", "boot": 0, "seq": 0, "type": "badge", "uid": "0F00C1D1E2", "replay": True}
    ]


def test_the_oldest_queued_events_are_dropped_when_storage_is_full(store, clock, link):
    node = make_node(store, clock, link, max_pending=10)
    for i in range(13):
        node.send_event("power", w=float(i))
    assert node.counters["dropped"] == 3
    assert node.unacked + node.queued == 10
    node.feed(b"".join(ack(s) for s in range(8)))
    assert events(link.take())[-2:] == [(0, 11), (0, 12)]


def test_an_event_too_big_for_a_line_is_refused_and_not_numbered(store, clock, link):
    node = make_node(store, clock, link)
    with pytest.raises(ValueError, match="512"):
        node.send_event("fault", code="x", msg="y" * 500)
    assert node.send_event("fault", code="x") == 0


# --- the reference firmware's application --------------------------------------------


class FakePin:
    def __init__(self) -> None:
        self.level: int | None = None

    def value(self, level: int | None = None) -> int | None:
        if level is None:
            return self.level
        self.level = level
        return None


def rfid_frame(uid: str) -> bytes:
    data = bytes.fromhex(uid)
    checksum = 0
    for byte in data:
        checksum ^= byte
    return b"\x02" + f"{uid}{checksum:02X}".encode() + b"\x03"


@pytest.fixture
def tool(clock, link):
    node = protocol.Node("lathe-node", "1.0", link.write, protocol.MemoryStore(), clock)
    tool = firmware_main.ToolNode(node, firmware_main.Relay(FakePin()), clock, reader=Rdm6300())
    node.start()
    link.take()
    return tool


def test_relay_is_off_at_boot_whatever_the_pin_held():
    pin = FakePin()
    pin.level = 1
    firmware_main.Relay(pin)
    assert pin.level == 0
    pin.level = 0
    firmware_main.Relay(pin, active_high=False)  # low-level-trigger boards: off is high
    assert pin.level == 1


def tapped(tool, link, uid: str = "0F00C1D1E2") -> int:
    """Present a card: the seq of the badge event the node sent."""
    tool.read_rfid(rfid_frame(uid))
    return next(f["seq"] for f in link.take() if f.get("type") == "badge")


def test_grant_switches_on_and_release_switches_off(tool, link):
    seq = tapped(tool, link)
    tool.node.feed(cmd(1, re=seq, action="grant", member="Ada L.", max_s=3600))
    assert tool.relay.is_on
    tool.node.feed(cmd(2, re=seq + 1, action="deny", reason="tool_in_use"))
    assert tool.relay.is_on  # someone else was refused; Ada keeps the tool
    tool.node.feed(cmd(3, action="release"))
    assert not tool.relay.is_on


def test_a_grant_ends_by_itself_after_max_s(tool, clock, link):
    tool.node.feed(cmd(1, re=tapped(tool, link), action="grant", max_s=60))
    clock.advance(59_999)
    tool.poll()
    assert tool.relay.is_on
    clock.advance(1)
    tool.poll()
    assert not tool.relay.is_on


def test_lock_switches_off_and_refuses_grants_until_unlock(tool, clock, link):
    tool.node.feed(cmd(1, re=tapped(tool, link), action="grant", max_s=60))
    tool.node.feed(cmd(2, action="lock"))
    assert not tool.relay.is_on
    clock.advance(1000)  # the card leaves, and comes again
    tool.poll()
    tool.node.feed(cmd(3, re=tapped(tool, link), action="grant", max_s=60))
    assert not tool.relay.is_on
    tool.poll()
    clock.advance(1000)
    tool.poll()
    tool.node.feed(
        cmd(4, action="unlock") + cmd(5, re=tapped(tool, link), action="grant", max_s=60)
    )
    assert tool.relay.is_on


def test_only_a_timely_bounded_reply_to_a_badge_switches_the_relay_on(tool, clock, link):
    """As the agent: a grant is the answer to a badge this node sent and still waits on."""
    tool.node.feed(cmd(1, action="grant", max_s=60))  # answers nothing
    tool.node.feed(cmd(2, re=0, action="grant", max_s=60))  # a badge never sent
    assert not tool.relay.is_on
    seq = tapped(tool, link)
    tool.node.feed(cmd(3, re=seq, action="grant", member="Ada L."))  # no time limit
    tool.node.feed(cmd(4, re=seq, action="grant", max_s=60))  # answered already
    assert not tool.relay.is_on
    clock.advance(1000)
    tool.poll()
    seq = tapped(tool, link)
    clock.advance(firmware_main.SETTINGS["reply_ms"] + 1)  # nobody waits any more
    tool.node.feed(cmd(5, re=seq, action="grant", max_s=60))
    assert not tool.relay.is_on
    tool.poll()
    seq = tapped(tool, link)
    tool.node.feed(cmd(6, re=seq, action="grant", max_s=60))
    assert tool.relay.is_on


def test_a_card_is_one_badge_while_held_then_badge_removed(tool, clock, link):
    for _ in range(5):  # the RDM6300 repeats its frame while the card is there
        tool.read_rfid(rfid_frame("0F00C1D1E2"))
        clock.advance(100)
        tool.poll()
    clock.advance(400)
    tool.poll()
    sent = [(f["type"], f["uid"]) for f in link.take() if f["t"] == "ev"]
    assert sent == [("badge", "0F00C1D1E2"), ("badge_removed", "0F00C1D1E2")]


def test_a_corrupted_rfid_frame_is_not_a_badge(tool, link):
    frame = bytearray(rfid_frame("0F00C1D1E2"))
    frame[3] = ord("1")
    tool.read_rfid(bytes(frame))
    assert link.take() == []
    assert tool.reader.bad_frames == 1


def test_power_is_reported_on_change_with_a_growing_energy_counter(clock, link):
    readings = iter([100.0, 100.0, 104.0, 400.0])
    node = protocol.Node("lathe-node", "1.0", link.write, protocol.MemoryStore(), clock)
    tool = firmware_main.ToolNode(
        node, firmware_main.Relay(FakePin()), clock, meter=lambda: next(readings)
    )
    node.start()
    for _ in range(4):
        tool.poll()
        clock.advance(3_600_000 // 1000)  # 3.6 s: a thousandth of an hour
    powers = [(f["w"], f["wh_total"]) for f in link.take() if f.get("type") == "power"]
    assert powers == [(100.0, 0.0), (400.0, 0.304)]  # 104 W is not a change worth sending


# --- the same files under MicroPython ------------------------------------------------

MICROPYTHON = shutil.which("micropython") or shutil.which(
    "micropython", path=str(Path(sys.executable).parent)
)

MICROPYTHON_SCRIPT = """
import sys
sys.path[:0] = [{firmware!r}, {bridge!r}]
import framing, protocol
from rdm6300 import Rdm6300
frames = []
now = [0]
store = protocol.FileStore({flash!r})
node = protocol.Node("lathe-node", "1.0", frames.append, store, lambda: now[0])
node.start()
for i in range(10):
    node.send_event("power", w=i * 1.5)
node.feed(framing.encode_frame({{"t": "ack", "seq": 0}}))
node.feed(framing.encode_frame({{"t": "cmd", "hseq": 5, "action": "release"}}) * 2)
now[0] = 500
node.poll()
print(Rdm6300().feed(b"\\x020F00C1D1E2FD\\x03", 0))
sys.stdout.write(b"".join(frames).decode())
"""


@pytest.mark.skipif(MICROPYTHON is None, reason="no MicroPython unix port installed")
def test_framing_and_protocol_run_under_micropython(tmp_path):
    script = tmp_path / "node.py"
    script.write_text(
        MICROPYTHON_SCRIPT.format(
            firmware=str(FIRMWARE),
            bridge=str(FIRMWARE.parent),
            flash=str(tmp_path / "flash"),
        )
    )
    run = subprocess.run([MICROPYTHON, str(script)], capture_output=True, timeout=60, check=True)
    first, _, wire = run.stdout.partition(b"\n")
    assert first == b"['0F00C1D1E2']"
    decoder = FrameDecoder()
    frames = decoder.feed(wire)
    assert decoder.counters["accepted"] == len(frames) == 1 + 8 + 1 + 2 + 8
    assert frames[0] == {"t": "hello", "id": "lathe-node", "boot": 0, "fw": "1.0"}
    assert events(frames[1:9]) == [(0, s) for s in range(8)]
    assert events(frames[9:10]) == [(0, 8)]  # seq 0 acked: seq 8 takes its place
    assert frames[10:12] == [{"t": "ack", "hseq": 5}] * 2
    assert events(frames[12:]) == [(0, s) for s in range(1, 9)]  # resent at 500 ms
