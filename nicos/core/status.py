"""Device status codes.

The numbers are those of upstream NICOS, because status values travel to
clients in cache events and existing clients colour them by number.  A status
is always the pair ``(code, text)``.
"""

from __future__ import annotations

OK = 200
WARN = 210
BUSY = 220
NOTREACHED = 230
DISABLED = 235
ERROR = 240
UNKNOWN = 999

Status = tuple[int, str]

STATUS_NAMES: dict[int, str] = {
    OK: "ok", WARN: "warning", BUSY: "busy", NOTREACHED: "not reached",
    DISABLED: "disabled", ERROR: "error", UNKNOWN: "unknown",
}


def status_name(code: int) -> str:
    """The word for a status code (``busy``), for messages to users."""
    return STATUS_NAMES.get(code, f"status {code}")


def is_failure(code: int) -> bool:
    """True for codes that mean the device did not do what it was asked."""
    return code in (ERROR, NOTREACHED)


__all__ = ["BUSY", "DISABLED", "ERROR", "NOTREACHED", "OK", "STATUS_NAMES", "Status",
           "UNKNOWN", "WARN", "is_failure", "status_name"]
