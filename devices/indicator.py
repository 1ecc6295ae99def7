"""What the member at the tool sees and hears: a status LED and a buzzer.

Every pattern tells the states apart by the LED alone (for a noisy shop or a member who
cannot hear the buzzer) and by the buzzer alone (for a member who is not looking):

* **ready**: LED off (RGB off); silent.
* **grant**: LED steady on (RGB green); one short beep (0.1 s).
* **deny**: 3 fast blinks, 0.1 s on / 0.1 s off (RGB red), with 3 short beeps; then back
  to the state shown before.
* **offline**: slow even blink, 1 s on / 1 s off (RGB yellow); silent, nobody is at fault.
* **locked**: a short flash every second, 0.1 s on / 0.9 s off (RGB red); one long beep
  (1 s).

Nothing blocks: steady patterns run in gpiozero's background blink, the short ones in a
thread of their own; a new state cancels what is showing. The buzzer is an *active* buzzer
(it sounds at a fixed pitch when powered), driven by gpiozero's ``Buzzer``.

Example::

    ind = Indicator(led=22, buzzer=24)
    ind.grant()                                        # green, one beep
    ind.deny()                                         # three blinks and beeps, back to green
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from gpiozero import LED, RGBLED, Buzzer

GREEN = (0, 1, 0)
RED = (1, 0, 0)
YELLOW = (1, 1, 0)
BLACK = (0, 0, 0)

# state: (LED: None off | "on" | (on_s, off_s) blinking forever, RGB colour)
STEADY = {
    "ready": (None, BLACK),
    "grant": ("on", GREEN),
    "offline": ((1.0, 1.0), YELLOW),
    "locked": ((0.1, 0.9), RED),
}


class Indicator:
    """A status LED (single or RGB) and an optional buzzer showing reader outcomes.

    :param led: GPIO of a single LED, or ``None``.
    :param rgb: GPIOs (red, green, blue) of an RGB LED instead of ``led``.
    :param buzzer: GPIO of an active buzzer, or ``None``.
    :param active_high: ``False`` for a common-anode RGB LED or LEDs wired to 3.3 V.
    :param pwm: drive the RGB LED with PWM (needs PWM-capable pins).
    :param time_scale: multiply every pattern's timing (tests use a small value).
    """

    def __init__(
        self,
        led: int | str | None = None,
        *,
        rgb: Sequence[int | str] | None = None,
        buzzer: int | str | None = None,
        active_high: bool = True,
        pwm: bool = False,
        time_scale: float = 1.0,
        pin_factory=None,
    ) -> None:
        if (led is None) == (rgb is None):
            raise ValueError("give either led or rgb (three pins)")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._rgb: RGBLED | None = None
        self._led: LED | None = None
        self._buzzer: Buzzer | None = None
        devices = []
        try:
            if rgb is not None:
                self._rgb = RGBLED(*rgb, active_high=active_high, pwm=pwm, pin_factory=pin_factory)
                devices.append(self._rgb)
            else:
                self._led = LED(led, active_high=active_high, pin_factory=pin_factory)
                devices.append(self._led)
            if buzzer is not None:
                self._buzzer = Buzzer(buzzer, pin_factory=pin_factory)
        except Exception:
            for device in devices:
                device.close()
            raise
        self._state = "ready"
        self._lock = threading.Lock()
        self._generation = 0
        self._transient: threading.Thread | None = None
        self._cancel = threading.Event()

    @property
    def state(self) -> str:
        """The steady state shown: ``ready``, ``grant``, ``offline`` or ``locked``."""
        return self._state

    # -- the states ----------------------------------------------------------------------

    def ready(self) -> None:
        """Nothing to show: LED off."""
        self._show("ready")

    def grant(self) -> None:
        """Access granted: LED on (green), one short beep."""
        self._show("grant", beep=(0.1, 0.1, 1))

    def deny(self) -> None:
        """Access denied: 3 fast blinks (red) and beeps, then back to the state before."""
        self._show(self._state, blink=(0.1, 0.1, 3))

    def offline(self) -> None:
        """The hub is unreachable: slow blink (yellow), silent."""
        self._show("offline")

    def locked(self) -> None:
        """The tool is locked out for maintenance: short flash each second (red), long beep."""
        self._show("locked", beep=(1.0, 0.1, 1))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a short pattern (beeps, deny blinks) has finished; ``False`` on timeout."""
        thread = self._transient
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # -- machinery -----------------------------------------------------------------------

    def _show(self, state: str, *, beep=None, blink=None) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._cancel.set()
            old = self._transient
        if old is not None and old is not threading.current_thread():
            old.join()
        with self._lock:
            if generation != self._generation:
                return  # a newer call took over while we waited
            self._state = state
            self._cancel = threading.Event()
            self._transient = None
            if blink is None:
                self._steady(state)
            else:
                self._light(False)
            if self._buzzer is not None:
                self._buzzer.off()
            if beep is None and blink is None:
                return
            self._transient = threading.Thread(
                target=self._run_transient,
                args=(generation, self._cancel, beep or blink, blink is not None),
                name="Indicator",
                daemon=True,
            )
            self._transient.start()

    def _steady(self, state: str) -> None:
        led, color = STEADY[state]
        scale = self.time_scale
        if self._rgb is not None:
            if led is None:
                self._rgb.off()
            elif led == "on":
                self._rgb.color = color
            else:
                on, off = led
                self._rgb.blink(on * scale, off * scale, on_color=color, off_color=BLACK)
        elif self._led is not None:
            if led is None:
                self._led.off()
            elif led == "on":
                self._led.on()
            else:
                on, off = led
                self._led.blink(on * scale, off * scale)

    def _light(self, on: bool) -> None:
        if self._rgb is not None:
            self._rgb.color = RED if on else BLACK
        elif self._led is not None:
            self._led.value = on

    def _run_transient(self, generation, cancel, timing, with_led) -> None:
        on_s, off_s, n = timing
        on_s, off_s = on_s * self.time_scale, off_s * self.time_scale
        for i in range(n):
            if with_led:
                self._light(True)
            if self._buzzer is not None:
                self._buzzer.on()
            cancelled = cancel.wait(on_s)
            if with_led:
                self._light(False)
            if self._buzzer is not None:
                self._buzzer.off()
            if cancelled or (i < n - 1 and cancel.wait(off_s)):
                return
        if with_led:
            cancel.wait(off_s)
            with self._lock:
                if generation == self._generation:
                    self._steady(self._state)

    def close(self) -> None:
        """Stop every pattern, switch LED and buzzer off, release the pins."""
        with self._lock:
            self._generation += 1
            self._cancel.set()
            thread = self._transient
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for device in (self._rgb, self._led, self._buzzer):
            if device is not None:
                device.off()  # closing alone leaves the pin at its last level
                device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
