"""Finding setups on the search path and resolving their includes.

The search path is a list of directories (the generic ``setups/`` and each
facility's ``custom/<instrument>/setups/``).  A setup's name is its file name
without ``.py``; when two directories hold the same name, the earlier
directory wins, so a facility can replace a generic setup by putting its
directory first.  Files are read anew on every load, so an edited setup
takes effect with the next NewSetup/AddSetup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nicos.core.device import suggestion
from nicos.core.errors import ConfigurationError
from nicos.core.setupfile import SetupInfo, read_setup, run_setup_file


class SetupCatalog:
    """The setups found on a search path."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def files(self) -> dict[str, Path]:
        """Setup name -> file, first directory on the path winning."""
        found: dict[str, Path] = {}
        for directory in self.paths:
            if not directory.is_dir():
                continue
            for file in sorted(directory.glob("*.py")):
                if not file.name.startswith("_"):
                    found.setdefault(file.stem, file)
        return found

    def path_of(self, name: str, files: dict[str, Path] | None = None) -> Path:
        files = self.files() if files is None else files
        if name not in files:
            raise ConfigurationError(
                f"no setup named '{name}'{suggestion(name, files)}; "
                f"searched {', '.join(str(p) for p in self.paths) or 'no directories'}")
        return files[name]

    def read(self, name: str, files: dict[str, Path] | None = None) -> SetupInfo:
        files = self.files() if files is None else files
        return read_setup(name, self.path_of(name, files), self._configdata_loader(files))

    def _configdata_loader(self, files: dict[str, Path]) -> Any:
        reading: list[str] = []

        def load(name: str) -> dict[str, Any]:
            if name in reading:
                raise ConfigurationError(f"configdata() loop: {' -> '.join([*reading, name])}")
            reading.append(name)
            try:
                return run_setup_file(self.path_of(name, files), load)
            finally:
                reading.pop()

        return load

    def resolve(self, names: Iterable[str]) -> list[SetupInfo]:
        """The setups ``names`` with everything they include, includes first.
        Raises ConfigurationError for unknown names, broken files and excludes."""
        files = self.files()
        ordered: dict[str, SetupInfo] = {}
        visiting: set[str] = set()

        def visit(name: str, included_by: SetupInfo | None) -> None:
            if name in ordered or name in visiting:
                return  # an include loop is harmless: each setup is loaded once
            visiting.add(name)
            try:
                info = self.read(name, files)
            except ConfigurationError as err:
                if included_by is None:
                    raise
                raise ConfigurationError(f"{err} (included by {included_by.path})") from None
            if info.group == "configdata":
                raise ConfigurationError(f"{info.path}: setup '{name}' only holds "
                                         "configuration data and cannot be loaded")
            for include in info.includes:
                visit(include, info)
            ordered[name] = info

        for name in names:
            visit(name, None)
        for info in ordered.values():
            for excluded in info.excludes:
                if excluded in ordered:
                    raise ConfigurationError(
                        f"setup '{info.name}' cannot be loaded together with "
                        f"'{excluded}' ({info.path} excludes it)")
        return list(ordered.values())

    def describe_all(self) -> list[tuple[str, SetupInfo | ConfigurationError]]:
        """Every setup on the path, read, or the error reading it."""
        files = self.files()
        result: list[tuple[str, SetupInfo | ConfigurationError]] = []
        for name in sorted(files):
            try:
                result.append((name, self.read(name, files)))
            except ConfigurationError as err:
                result.append((name, err))
        return result


__all__ = ["SetupCatalog"]
