"""Rate limit for failed logins, per client address (§11.6).

A host may fail ``max_failures`` times within any ``window`` seconds; after that,
``check`` reports how long it must wait. A successful login clears the host's record,
so a user who mistyped is not held back afterwards.
"""

import ipaddress
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger("nicos_daemon.auth.throttle")

DEFAULT_MAX_HOSTS = 10_000
# One IPv6 holder usually controls a whole /64, so counting single addresses would let
# it rotate through addresses and never be throttled.
_IPV6_PREFIX = 64


def _host_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{_IPV6_PREFIX}", strict=False))
    return str(address)


class LoginThrottle:
    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_hosts: int = DEFAULT_MAX_HOSTS,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_hosts < 1:
            raise ValueError("max_failures, window and max_hosts must be positive")
        self._max_failures = max_failures
        self._window = window
        self._clock = clock
        self._max_hosts = max_hosts
        self._lock = threading.Lock()
        # Least recently failed first, so that pruning and eviction start at the front.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, host: str) -> float:
        """0.0 if ``host`` may try to log in now, else the seconds it has to wait."""
        key = _host_key(host)
        with self._lock:
            now = self._clock()
            times = self._failures.get(key)
            if times is None:
                return 0.0
            self._forget_expired(times, now)
            if not times:
                del self._failures[key]
                return 0.0
            if len(times) < self._max_failures:
                return 0.0
            return max(0.0, times[0] + self._window - now)

    def record_failure(self, host: str) -> None:
        key = _host_key(host)
        with self._lock:
            now = self._clock()
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=self._max_failures)
            times.append(now)
            self._failures.move_to_end(key)
            if len(self._failures) > self._max_hosts:
                self._shrink(now)
            if len(times) == self._max_failures:
                log.warning("login throttled for %s: %d failures within %g s",
                            key, self._max_failures, self._window)

    def record_success(self, host: str) -> None:
        with self._lock:
            self._failures.pop(_host_key(host), None)

    def tracked_hosts(self) -> int:
        """Number of hosts currently remembered (for monitoring and tests)."""
        with self._lock:
            return len(self._failures)

    def _forget_expired(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self._window:
            times.popleft()

    def _shrink(self, now: float) -> None:
        # Entries are ordered by their latest failure, so fully expired ones form a prefix.
        while self._failures:
            oldest_key, oldest_times = next(iter(self._failures.items()))
            if oldest_times[-1] > now - self._window:
                break
            del self._failures[oldest_key]
        while len(self._failures) > self._max_hosts:
            evicted, _ = self._failures.popitem(last=False)
            log.warning("throttle table full (%d hosts): forgetting %s",
                        self._max_hosts, evicted)
