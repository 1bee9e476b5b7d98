"""Where setups and facility code live.

The project root holds ``setups/`` (generic instrument descriptions) and
``custom/<instrument>/`` (a facility's own setups and device classes, an
importable package ``custom.<instrument>``).  These defaults suit running
from a checkout; a daemon may pass its own search path instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def setup_search_path(root: Path = PROJECT_ROOT,
                      instruments: Iterable[str] | None = None) -> list[Path]:
    """``custom/<instrument>/setups`` for each instrument (all found when
    None), then the generic ``setups``: facility setups come first so that
    they can replace a generic setup of the same name."""
    custom = root / "custom"
    if instruments is None:
        instruments = sorted(p.name for p in custom.glob("*") if (p / "setups").is_dir())
    return [custom / name / "setups" for name in instruments] + [root / "setups"]


def make_facility_code_importable(root: Path = PROJECT_ROOT) -> None:
    """Let setups name classes like ``custom.refl.devices.Slit``.

    The installed package holds ``nicos`` only; facility code stays in the
    checkout, so its root goes on the import path (at the end: installed
    packages keep precedence).
    """
    text = str(root)
    if (root / "custom").is_dir() and text not in sys.path:
        sys.path.append(text)


__all__ = ["PROJECT_ROOT", "make_facility_code_importable", "setup_search_path"]
