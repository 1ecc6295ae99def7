"""Failed logins: growing delays per account and per client address, not a lock.

A lock after a few failures (the rule before) let anyone keep anyone locked out, the
owner included, by failing on purpose every few minutes; and behind the shop's TLS
proxy every client had the proxy's address, so one guesser locked out the whole shop.
So here a key (an account, an address, an account on a known device) may fail a few
times freely; after that each failure doubles the wait before the next try, up to a
cap.  A guesser gets a few hundred tries a day at most, whatever they do.

The account's owner on a device they logged in on before (a *known device*: a signed
cookie, web/auth.py) is counted apart: on that device only that device's own failures
slow them down, so strangers' failures neither lock nor delay them.

Pure: every method takes ``now`` (monotonic seconds); the web passes the clock.

>>> throttle = LoginThrottle(per_account=2, per_address=10, first_delay_s=1, max_delay_s=8)
>>> for t in (0, 0, 1, 3):
...     throttle.failed("acct:ada", "10.0.0.6", None, t)
>>> throttle.wait("acct:ada", "10.0.0.7", None, 3)    # 4 failures: 1, then 2, then 4 s
4.0
>>> throttle.wait("acct:ada", "10.0.0.6", "d1", 3)    # the owner's known device: no wait
0.0
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# Keys kept at most; a flood of new keys (made-up handles, many addresses behind a
# proxy) drops the ones that wait for nothing first.
MAX_KEYS = 10_000


@dataclass
class _Failures:
    count: int
    last: float  # when the last one was, monotonic seconds


class LoginThrottle:
    """Failed logins per key, each failure past the free ones doubling the wait.

    ``per_account`` and ``per_address`` failures are free; then the next try waits
    ``first_delay_s``, then twice that, up to ``max_delay_s``.  A key's count is
    forgotten ``forget_s`` after its last failure, and an account's at a success.
    """

    def __init__(
        self,
        per_account: int = 5,
        per_address: int = 20,
        first_delay_s: float = 1.0,
        max_delay_s: float = 900.0,
        forget_s: float = 86_400.0,
    ):
        self.per_account, self.per_address = per_account, per_address
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.forget_s = max(forget_s, max_delay_s)
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def delay(self, failures: int, free: int) -> float:
        """The wait after ``failures`` failures of a key that has ``free`` free ones."""
        if failures < free:
            return 0.0
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** min(failures - free, 64)))

    def _keys(self, account: str, address: str, device: str | None) -> list[tuple[str, int]]:
        if device is not None:  # the owner's device: only its own failures count
            return [(f"device:{device}:{account}", self.per_account)]
        return [(f"account:{account}", self.per_account), (f"address:{address}", self.per_address)]

    def _wait(self, key: str, free: int, now: float) -> float:
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.last + self.delay(entry.count, free) - now)

    def wait(self, account: str, address: str, device: str | None, now: float) -> float:
        """Seconds until ``account`` may try again from ``address`` (and ``device``, the
        id of a known device, or None): 0 to try now."""
        keys = self._keys(account, address, device)
        with self._lock:
            return max(self._wait(key, free, now) for key, free in keys)

    def failed(self, account: str, address: str, device: str | None, now: float) -> None:
        with self._lock:
            for key, _free in self._keys(account, address, device):
                entry = self._failures.get(key)
                if entry is None or now - entry.last > self.forget_s:
                    entry = self._failures[key] = _Failures(0, now)
                entry.count += 1
                entry.last = now
            if len(self._failures) > MAX_KEYS:
                self._forget(now)

    def succeeded(self, account: str, address: str, device: str | None) -> None:
        """The account's failures (on this device, or on unknown ones) are forgotten;
        the address's are not, or a guesser could clear them with an account of theirs."""
        with self._lock:
            for key, _free in self._keys(account, address, device):
                if not key.startswith("address:"):
                    self._failures.pop(key, None)

    def _forget(self, now: float) -> None:
        stale = [k for k, e in self._failures.items() if now - e.last > self.forget_s]
        for key in stale:
            del self._failures[key]
        if len(self._failures) > MAX_KEYS:  # still too many: the oldest half goes
            by_age = sorted(self._failures, key=lambda k: self._failures[k].last)
            for key in by_age[: len(by_age) // 2]:
                del self._failures[key]
