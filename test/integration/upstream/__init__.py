"""Helpers to drive the unchanged upstream NICOS client (and daemon) in tests.

``fetch.ensure_upstream()`` provides the upstream release in a cached venv;
``driver.py`` runs inside that venv and speaks JSON lines on stdin/stdout.
See README.md in this folder.
"""

from .fetch import NICOS_VERSION, UpstreamEnv, default_cache, ensure_upstream

__all__ = ["NICOS_VERSION", "UpstreamEnv", "default_cache", "ensure_upstream"]
