"""Failed-login throttle, driven by a fake clock."""

import pytest

from nicos_daemon.auth.throttle import LoginThrottle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def fail(throttle: LoginThrottle, host: str, times: int) -> None:
    for _ in range(times):
        throttle.record_failure(host)


def test_blocks_after_max_failures_within_window(clock):
    throttle = LoginThrottle(max_failures=5, window=60.0, clock=clock)
    assert throttle.check("10.0.0.1") == 0.0
    fail(throttle, "10.0.0.1", 4)
    assert throttle.check("10.0.0.1") == 0.0
    clock.now += 10
    throttle.record_failure("10.0.0.1")
    assert throttle.check("10.0.0.1") == pytest.approx(50.0)
    clock.now += 20
    assert throttle.check("10.0.0.1") == pytest.approx(30.0)


def test_window_slides(clock):
    throttle = LoginThrottle(max_failures=3, window=60.0, clock=clock)
    throttle.record_failure("h")
    clock.now += 30
    fail(throttle, "h", 2)
    assert throttle.check("h") == pytest.approx(30.0)
    clock.now += 30  # the first failure has left the window
    assert throttle.check("h") == 0.0
    throttle.record_failure("h")
    assert throttle.check("h") == pytest.approx(30.0)  # until the 2nd failure expires


def test_old_failures_do_not_count(clock):
    throttle = LoginThrottle(max_failures=2, window=60.0, clock=clock)
    throttle.record_failure("h")
    clock.now += 61
    throttle.record_failure("h")
    assert throttle.check("h") == 0.0


def test_success_clears_the_host(clock):
    throttle = LoginThrottle(max_failures=2, window=60.0, clock=clock)
    fail(throttle, "h", 2)
    assert throttle.check("h") > 0
    throttle.record_success("h")
    assert throttle.check("h") == 0.0
    throttle.record_failure("h")
    assert throttle.check("h") == 0.0


def test_hosts_are_independent(clock):
    throttle = LoginThrottle(max_failures=2, window=60.0, clock=clock)
    fail(throttle, "10.0.0.1", 2)
    assert throttle.check("10.0.0.1") > 0
    assert throttle.check("10.0.0.2") == 0.0


def test_ipv6_hosts_count_per_64_prefix(clock):
    throttle = LoginThrottle(max_failures=3, window=60.0, clock=clock)
    for suffix in ("1", "2", "3"):
        throttle.record_failure(f"2001:db8:0:7::{suffix}")
    assert throttle.check("2001:db8:0:7::ffff") > 0
    assert throttle.check("2001:db8:0:8::1") == 0.0


def test_ipv4_mapped_address_is_the_ipv4_host(clock):
    throttle = LoginThrottle(max_failures=2, window=60.0, clock=clock)
    throttle.record_failure("192.0.2.1")
    throttle.record_failure("::ffff:192.0.2.1")
    assert throttle.check("192.0.2.1") > 0


def test_expired_hosts_are_pruned_before_active_ones(clock):
    throttle = LoginThrottle(max_failures=5, window=60.0, clock=clock, max_hosts=2)
    fail(throttle, "a", 5)
    clock.now += 30
    fail(throttle, "b", 5)
    clock.now += 31  # "a" has expired, "b" has not
    throttle.record_failure("c")
    assert throttle.tracked_hosts() == 2
    assert throttle.check("b") == pytest.approx(29.0)


def test_table_is_capped_by_evicting_the_least_recent_host(clock):
    throttle = LoginThrottle(max_failures=2, window=60.0, clock=clock, max_hosts=2)
    for host in ("a", "b", "c"):
        fail(throttle, host, 2)
        clock.now += 1
    assert throttle.tracked_hosts() == 2
    assert throttle.check("a") == 0.0
    assert throttle.check("b") > 0 and throttle.check("c") > 0


def test_many_hosts_stay_bounded(clock):
    throttle = LoginThrottle(max_failures=5, window=60.0, clock=clock, max_hosts=100)
    for index in range(1000):
        throttle.record_failure(f"10.0.{index // 256}.{index % 256}")
    assert throttle.tracked_hosts() == 100


def test_check_forgets_expired_hosts(clock):
    throttle = LoginThrottle(max_failures=5, window=60.0, clock=clock)
    throttle.record_failure("h")
    clock.now += 60
    assert throttle.check("h") == 0.0
    assert throttle.tracked_hosts() == 0


@pytest.mark.parametrize("kwargs", [{"max_failures": 0}, {"window": 0}, {"max_hosts": 0}])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        LoginThrottle(**kwargs)
