"""Failed logins wait longer and longer, per account and per address (web/throttle.py),
and the client's address behind the shop's proxy (web/proxies.py).  Pure: no clock,
every call says when it happens."""

from __future__ import annotations

from web.proxies import client_address, networks
from web.throttle import MAX_KEYS, LoginThrottle

ADA = "handle:ada"


def _fail(throttle: LoginThrottle, times: int, at: float, address: str = "10.0.0.66") -> None:
    for _ in range(times):
        throttle.failed(ADA, address, None, at)


def test_after_the_free_failures_each_one_doubles_the_wait_up_to_the_cap():
    throttle = LoginThrottle(per_account=5, per_address=100, first_delay_s=1, max_delay_s=60)
    _fail(throttle, 4, 0)
    assert throttle.wait(ADA, "10.0.0.66", None, 0) == 0  # four typos cost nothing
    waits = []
    now = 0.0
    for _ in range(9):
        throttle.failed(ADA, "10.0.0.66", None, now)
        wait = throttle.wait(ADA, "10.0.0.66", None, now)
        waits.append(wait)
        now += wait  # the guesser tries again the moment it may
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    # so a guesser gets a few hundred tries a day, not a lock on the owner
    assert throttle.wait(ADA, "10.0.0.66", None, now - 1) == 1


def test_the_account_waits_for_every_address_and_the_address_for_every_account():
    throttle = LoginThrottle(per_account=3, per_address=5, first_delay_s=10, max_delay_s=900)
    _fail(throttle, 3, 0, "10.0.0.66")
    assert throttle.wait(ADA, "10.0.0.7", None, 1) == 9  # another address: the account waits
    for i in range(5):  # one address trying many accounts
        throttle.failed(f"handle:x{i}", "10.0.0.99", None, 0)
    assert throttle.wait("handle:bob", "10.0.0.99", None, 0) == 10
    assert throttle.wait("handle:bob", "10.0.0.7", None, 0) == 0


def test_the_owners_known_device_counts_its_own_failures_only():
    throttle = LoginThrottle(per_account=3, per_address=5, first_delay_s=10, max_delay_s=900)
    _fail(throttle, 50, 0)  # a stranger hammers the account and her address alike
    assert throttle.wait(ADA, "10.0.0.66", "laptop", 0) == 0
    for _ in range(3):
        throttle.failed(ADA, "10.0.0.66", "laptop", 1)
    assert throttle.wait(ADA, "10.0.0.66", "laptop", 1) == 10  # her typos do count
    assert throttle.wait(ADA, "10.0.0.66", "phone", 1) == 0


def test_a_success_forgets_the_accounts_failures_not_the_addresses():
    throttle = LoginThrottle(per_account=2, per_address=3, first_delay_s=10, max_delay_s=900)
    throttle.failed("handle:x", "10.0.0.66", None, 0)
    throttle.failed(ADA, "10.0.0.66", None, 0)
    throttle.failed(ADA, "10.0.0.66", None, 0)
    throttle.succeeded(ADA, "10.0.0.66", None)  # his own account, to clear his address
    assert throttle.wait(ADA, "10.0.0.7", None, 0) == 0
    assert throttle.wait("handle:bob", "10.0.0.66", None, 0) == 10


def test_failures_are_forgotten_after_a_quiet_day_and_memory_stays_bounded():
    throttle = LoginThrottle(per_account=1, per_address=1000, first_delay_s=10, forget_s=3600)
    _fail(throttle, 3, 0)
    throttle.failed(ADA, "10.0.0.66", None, 3601 + 40)  # a day later: one failure again
    assert throttle.wait(ADA, "10.0.0.66", None, 3641) == 10
    for i in range(MAX_KEYS + 10):
        throttle.failed(f"handle:made-up-{i}", "10.0.0.66", None, 4000 + i)
    assert len(throttle._failures) <= MAX_KEYS


def test_a_proxy_names_the_client_only_when_trusted():
    trusted = networks(["127.0.0.1", "10.0.9.0/24"])
    assert client_address("127.0.0.1", "10.0.0.7", trusted) == "10.0.0.7"
    # the client's own entries left of what the proxy appended count for nothing
    assert client_address("127.0.0.1", "1.2.3.4, 10.0.0.7", trusted) == "10.0.0.7"
    # a chain of trusted proxies: the first address that is none of them
    assert client_address("127.0.0.1", "10.0.0.7, 10.0.9.4", trusted) == "10.0.0.7"
    assert client_address("192.168.1.30", "10.0.0.7", trusted) == "192.168.1.30"
    assert client_address("127.0.0.1", "10.0.0.7", ()) == "127.0.0.1"
    assert client_address("127.0.0.1", "not-an-address", trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", "", trusted) == "127.0.0.1"
