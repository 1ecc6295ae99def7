"""peershop reference tool node: RDM6300 reader, relay, current sense, status LED.

MicroPython runs this file at boot.  It talks docs/serial-protocol.md to ``peershop bridge``
over USB (or a UART), reports badges and power, and switches the tool's relay on a
``grant``.  The relay is off from the first instruction of :func:`run`, goes on only
on a grant that answers a badge this node sent within ``reply_ms``, carries a
``max_s`` and comes while the tool is not locked; and off again on ``release``,
``lock``, the grant's ``max_s``, or any crash of the main loop.  Pins and settings are
in ``SETTINGS`` below; see README.md.

Everything but :func:`run` is free of hardware and real time, so the tests drive
:class:`ToolNode` under CPython with fake pins and a fake clock.
"""

try:  # CPython tests
    from firmware_bridge.firmware import protocol
    from firmware_bridge.firmware.rdm6300 import Rdm6300
except ImportError:  # the board: the files sit side by side
    import protocol
    from rdm6300 import Rdm6300

FW = "1.0.0"

SETTINGS = {
    "id": "lathe-node",  # the device id registered with `peershop device add`
    "kind": ["reader", "interlock", "power"],
    "link": "usb",  # "usb": the board's USB serial; or a UART number wired to the Pi
    "relay_active_high": True,  # False for the common low-level-trigger relay boards
    "mains_v": 230.0,  # to turn current into watts
    "amps_per_volt": 30.0,  # current transformer + burden: SCT-013-030 gives 30 A per 1 V
    "power_every_ms": 2000,  # how often the current is measured
    "power_report_ms": 300000,  # a power event at least this often
    "power_delta_w": 10.0,  # and whenever the reading moves this much (and 10 %)
    "watchdog_ms": 0,  # e.g. 8000 in production; 0 while developing (mpremote stops main)
    "reply_ms": 5000,  # a grant counts only this soon after its badge; later, nobody waits
    "pins": {
        "esp32": {"rfid_uart": 2, "rfid_rx": 16, "relay": 26, "adc": 34, "led": 25},
        "rp2": {"rfid_uart": 0, "rfid_rx": 1, "relay": 15, "adc": 26, "led": "LED"},
    },
}


def _subtract(a, b):
    return a - b


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Relay:
    """The tool's power relay on an output pin; off unless told otherwise."""

    def __init__(self, pin, active_high=True):
        self._pin = pin
        self._on_level = 1 if active_high else 0
        self.off()

    def on(self):
        self._pin.value(self._on_level)

    def off(self):
        self._pin.value(1 - self._on_level)

    @property
    def is_on(self):
        return self._pin.value() == self._on_level


def rms_amps(samples, amps_per_volt, full_scale_v=3.3):
    """RMS current of raw ``read_u16`` samples of a CT biased at mid-rail."""
    if not samples:
        return 0.0
    mean = sum(samples) / len(samples)
    square = 0.0
    for value in samples:
        square += (value - mean) * (value - mean)
    volts = (square / len(samples)) ** 0.5 * full_scale_v / 65535
    return volts * amps_per_volt


class ToolNode:
    """The application: badges and power out to the hub, commands in to the relay.

    >>> class Pin:
    ...     level = None
    ...     def value(self, v=None):
    ...         if v is None:
    ...             return self.level
    ...         self.level = v
    >>> clock, frames = [0], []
    >>> now = lambda: clock[0]
    >>> node = protocol.Node("lathe-node", FW, frames.append, protocol.MemoryStore(), now)
    >>> tool = ToolNode(node, Relay(Pin()), now)
    >>> tool.relay.is_on
    False
    >>> tool.on_command({"re": 0, "action": "grant", "max_s": 60})  # no badge waits for it
    >>> tool.relay.is_on
    False
    >>> node.start()
    >>> tool.badge("0F00C1D1E2")
    >>> tool.on_command({"re": 0, "action": "grant", "max_s": 60})
    >>> tool.relay.is_on
    True
    """

    def __init__(self, node, relay, now_ms, ticks_diff=None, reader=None, meter=None):
        self.node = node
        self.relay = relay
        self.relay.off()
        self.locked = False
        self.reader = reader
        self.meter = meter  # a callable returning watts, or None
        self._now = now_ms
        self._diff = ticks_diff or _subtract
        self._granted_at = None
        self._grant_ms = None  # the grant's max_s in ms, None for no limit
        self._measured_at = None
        self._measured_w = 0.0
        self._reported_at = None
        self._reported_w = None
        self._wh_total = 0.0
        self._waiting = {}  # seq of a badge sent -> when, until its reply or reply_ms
        node.on_command = self.on_command

    def on_command(self, command):
        """A command of docs/device-protocol.md from the hub (the protocol drops duplicates).

        A ``grant`` switches the relay on only as the reply (``re``) to a badge this node
        sent at most ``reply_ms`` ago and has had no reply for, never while locked, and
        only with a positive ``max_s``: anything else that says grant is not obeyed.
        """
        action = command.get("action")
        re = command.get("re")
        sent = self._waiting.pop(re, None) if _is_number(re) else None
        if action == "grant":
            if sent is None or self._diff(self._now(), sent) > SETTINGS["reply_ms"]:
                return  # answers no badge waiting for a reply
            if self.locked:
                return  # maintenance lock: the hub should not grant, and we do not obey
            max_s = command.get("max_s")
            if not _is_number(max_s) or not 0 < max_s < 1e9:
                return  # a grant with no time limit
            self.relay.on()
            self._granted_at = self._now()
            self._grant_ms = int(max_s * 1000)
        elif action == "release" or action == "lock":
            self._end_session()
            self.locked = action == "lock"
        elif action == "unlock":
            self.locked = False
        # "deny" leaves a running session alone (someone else was refused);
        # "rebirth" is answered by the protocol itself.

    def _end_session(self):
        self.relay.off()
        self._granted_at = None
        self._grant_ms = None

    def read_rfid(self, data):
        """Bytes from the RDM6300's UART: each new card is a ``badge`` event."""
        for uid in self.reader.feed(data, self._now()):
            self.badge(uid)

    def badge(self, uid):
        """Send a ``badge`` event and wait (``reply_ms``) for the hub's reply to it."""
        now = self._now()
        for seq in list(self._waiting):  # no reply in time: nobody waits any more
            if self._diff(now, self._waiting[seq]) > SETTINGS["reply_ms"]:
                del self._waiting[seq]
        self._waiting[self.node.send_event("badge", uid=uid)] = now

    def poll(self):
        """Timers: the grant's ``max_s``, cards leaving the reader, power samples."""
        now = self._now()
        if self._grant_ms is not None and self._diff(now, self._granted_at) >= self._grant_ms:
            self._end_session()
        if self.reader is not None:
            for uid in self.reader.removed(now):
                self.node.send_event("badge_removed", uid=uid)
        if self.meter is not None:
            self._sample_power(now)

    def _sample_power(self, now):
        every = SETTINGS["power_every_ms"]
        if self._measured_at is not None and self._diff(now, self._measured_at) < every:
            return
        w = self.meter()
        if self._measured_at is not None:  # the last reading held until this one
            self._wh_total += self._measured_w * self._diff(now, self._measured_at) / 3600000
        self._measured_at = now
        self._measured_w = w
        last = self._reported_w
        moved = last is None or (
            abs(w - last) >= SETTINGS["power_delta_w"] and abs(w - last) >= 0.1 * last
        )
        due = self._reported_at is None or (
            self._diff(now, self._reported_at) >= SETTINGS["power_report_ms"]
        )
        if moved or due:
            self.node.send_event("power", w=round(w, 1), wh_total=round(self._wh_total, 3))
            self._reported_at = now
            self._reported_w = w


class UsbLink:
    """The board's USB serial (the REPL's), read without blocking."""

    def __init__(self):
        import select  # MicroPython: load only when the node runs, not when tests import it
        import sys  # MicroPython: load only when the node runs, not when tests import it

        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)

    def read(self):
        data = bytearray()
        while len(data) < 256 and self._poll.poll(0):
            data.extend(self._in.read(1))
        return data

    def write(self, frame):
        self._out.write(frame)


class UartLink:
    """A UART wired to the Pi's serial port (115200 8N1)."""

    def __init__(self, uart):
        self._uart = uart

    def read(self):
        return self._uart.read() or b""

    def write(self, frame):
        self._uart.write(frame)


def run():
    """Wire the node to the board and loop forever."""
    import sys  # MicroPython: load only when the node runs, not when tests import it
    import time  # MicroPython: load only when the node runs, not when tests import it

    import machine  # on the board only: MicroPython's machine module

    pins = SETTINGS["pins"][sys.platform]
    # Fail-safe first: the relay pin is driven to "off" before anything else can fail.
    off_level = 0 if SETTINGS["relay_active_high"] else 1
    relay = Relay(
        machine.Pin(pins["relay"], machine.Pin.OUT, value=off_level),
        SETTINGS["relay_active_high"],
    )
    try:
        led = machine.Pin(pins["led"], machine.Pin.OUT, value=0)
        rfid = machine.UART(pins["rfid_uart"], baudrate=9600, rx=pins["rfid_rx"])
        adc = machine.ADC(machine.Pin(pins["adc"]))
        if sys.platform == "esp32":
            adc.atten(machine.ADC.ATTN_11DB)  # the full 0-3.3 V range

        def watts():
            samples = []
            for _ in range(200):  # about two mains cycles at 50 Hz
                samples.append(adc.read_u16())
                time.sleep_us(200)
            return rms_amps(samples, SETTINGS["amps_per_volt"]) * SETTINGS["mains_v"]

        if SETTINGS["link"] == "usb":
            link = UsbLink()
        else:
            link = UartLink(machine.UART(SETTINGS["link"], baudrate=115200))
        node = protocol.Node(
            SETTINGS["id"],
            FW,
            link.write,
            protocol.FileStore("/peershop"),
            time.ticks_ms,
            ticks_diff=time.ticks_diff,
            kind=SETTINGS["kind"],
        )
        tool = ToolNode(
            node,
            relay,
            time.ticks_ms,
            ticks_diff=time.ticks_diff,
            reader=Rdm6300(ticks_diff=time.ticks_diff),
            meter=watts,
        )
        watchdog = machine.WDT(timeout=SETTINGS["watchdog_ms"]) if SETTINGS["watchdog_ms"] else None
        node.start()
        while True:
            data = link.read()
            if data:
                node.feed(data)
            data = rfid.read()
            if data:
                tool.read_rfid(data)
            tool.poll()
            node.poll()
            # Steady light: the bridge acks what we send; blinking: events are waiting.
            if node.waiting_ms() < 2000:
                led.value(1)
            else:
                led.value((time.ticks_ms() // 250) % 2)
            if watchdog is not None:
                watchdog.feed()
            time.sleep_ms(5)
    finally:
        relay.off()


if __name__ == "__main__":
    run()
