"""Provide the unchanged upstream NICOS release in a private cache.

The upstream client (and, for benchmarks, the upstream daemon) run in their own
virtual environment with the unpacked source tree on ``PYTHONPATH``, so that the
upstream ``nicos`` package never meets ours.  Nothing of it enters the
repository: everything lives in the cache directory, by default
``<repo>/.cache/upstream`` (gitignored), or wherever ``NICOS_UPSTREAM_CACHE``
points.

Layout of the cache directory::

    .lock               flock(2) target serialising builds across processes
    ready.json          marker, written last; describes what was built
    venv/               the virtual environment (its ``bin/python``)
    nicos-<version>/    the unpacked upstream source tree
    build.log           output of the last build

A build happens in a temporary directory next to these and is renamed into
place, so an interrupted build never leaves a half-made environment behind.

Command line: ``python test/integration/upstream/fetch.py [--cache DIR]
[--force] [--json]`` prints where the environment is.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NICOS_VERSION = "3.12.2"

# What the upstream release needs at run time, in the same venv:
# - the client: rsa (password encryption), numpy (event blob buffers), toml
#   (nicos.conf parsing on import of nicos), plus setuptools/wheel/tomlkit
#   that its sdist build step wants while pip prepares metadata;
# - psutil, html2text: imported by the daemon session (process info, help);
# - nicos-pyctl: the C trace module behind the daemon's script controller
#   (without it the daemon refuses to run any script);
# - scipy: imported by nicos.commands.standard (fitting helpers), the module
#   that provides sleep(), printinfo(), move() ... to scripts.
BASE_PACKAGES: tuple[str, ...] = (
    "setuptools",
    "wheel",
    "rsa",
    "numpy",
    "toml",
    "tomlkit",
    "psutil",
    "html2text",
)
DAEMON_PACKAGES: tuple[str, ...] = ("nicos-pyctl", "scipy")

ENV_CACHE = "NICOS_UPSTREAM_CACHE"
ENV_BASE_PYTHON = "NICOS_UPSTREAM_BASE_PYTHON"

MARKER = "ready.json"
LOCKFILE = ".lock"
STEP_TIMEOUT = 600.0  # seconds for one pip/venv step
LOCK_TIMEOUT = 1200.0  # seconds to wait for another process's build

REPO_ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class UpstreamEnv:
    """A ready upstream installation."""

    root: Path  # the cache directory
    python: Path  # the upstream venv's interpreter
    tree: Path  # the unpacked nicos-<version> source tree
    version: str = NICOS_VERSION

    @property
    def client_script(self) -> Path:
        """The upstream text client (``nicos-client``)."""
        return self.tree / "bin" / "nicos-client"

    @property
    def daemon_script(self) -> Path:
        """The upstream daemon entry script (``nicos-daemon``)."""
        return self.tree / "bin" / "nicos-daemon"

    @property
    def driver(self) -> Path:
        """Our JSON-lines driver around the upstream client (driver.py)."""
        return HERE / "driver.py"

    def env(
        self,
        extra: Mapping[str, str] | None = None,
        *,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
    ) -> dict[str, str]:
        """Environment for a process run with :attr:`python`.

        Starts from ``os.environ`` without any variable that could pull in our
        own packages or another interpreter, puts the upstream tree first on
        ``PYTHONPATH`` followed by *pythonpath*, then applies *extra* (a
        ``PYTHONPATH`` in *extra* is appended after the tree, not replacing it).
        """
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "INSTRUMENT")
        }
        parts = [str(self.tree), *(os.fspath(p) for p in pythonpath)]
        extra = dict(extra or {})
        if extra.get("PYTHONPATH"):
            parts.append(extra.pop("PYTHONPATH"))
        env["PYTHONPATH"] = os.pathsep.join(parts)
        env["PYTHONNOUSERSITE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        env.update(extra)
        return env

    def driver_command(self, host: str, port: int, user: str, password: str) -> list[str]:
        """Command line that starts driver.py against ``host:port``."""
        return [str(self.python), str(self.driver), host, str(port), user, password]


def default_cache() -> Path:
    """The cache directory: ``$NICOS_UPSTREAM_CACHE`` or ``<repo>/.cache/upstream``."""
    value = os.environ.get(ENV_CACHE)
    if value:
        return Path(value).expanduser().resolve()
    return REPO_ROOT / ".cache" / "upstream"


def _wanted() -> dict[str, object]:
    """Description of the build; a marker that differs triggers a rebuild.

    The caller's interpreter is deliberately not part of it: the upstream venv
    is used through its own interpreter, whoever asks for it.
    """
    return {"nicos": NICOS_VERSION, "packages": list(BASE_PACKAGES + DAEMON_PACKAGES)}


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _env_from(cache: Path) -> UpstreamEnv:
    return UpstreamEnv(
        root=cache,
        python=_venv_python(cache / "venv"),
        tree=cache / f"nicos-{NICOS_VERSION}",
    )


def _is_ready(cache: Path, wanted: Mapping[str, object]) -> bool:
    try:
        marker = json.loads((cache / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("wanted") != wanted:
        return False
    env = _env_from(cache)
    return env.python.exists() and (env.tree / "nicos" / "clients" / "base.py").is_file()


@contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Exclusive flock on *path*, waiting at most *timeout* seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _clean_env() -> dict[str, str]:
    """Environment for pip and venv: no project paths, never interactive."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env.update(
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONNOUSERSITE="1",
    )
    return env


def _run(cmd: Sequence[str | os.PathLike[str]], log: Path, cwd: Path) -> None:
    argv = [os.fspath(c) for c in cmd]
    with log.open("a") as fp:
        fp.write(f"\n$ {' '.join(argv)}\n")
        fp.flush()
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=fp,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {STEP_TIMEOUT:.0f} s: {argv}; see {log}") from None
    if proc.returncode != 0:
        tail = "".join(
            line
            for line in log.read_text(errors="replace").splitlines(keepends=True)[-30:]
            if "is ignored: it is neither" not in line
        )
        raise RuntimeError(f"command failed ({proc.returncode}): {argv}\n{tail}")


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(dest)


def _build(cache: Path, base_python: str, wanted: Mapping[str, object]) -> None:
    # we hold the lock: whatever a killed build left behind can go
    for stale in [*cache.glob(".build-*"), *cache.glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    log = cache / "build.log"
    log.write_text(f"building upstream nicos {NICOS_VERSION} with {base_python}\n")
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        venv = work / "venv"
        _run([base_python, "-m", "venv", venv], log, work)
        py = _venv_python(venv)
        pip = [py, "-m", "pip", "--no-input", "--disable-pip-version-check"]
        _run([*pip, "install", "--quiet", *BASE_PACKAGES, *DAEMON_PACKAGES], log, work)
        dl = work / "dl"
        _run(
            [
                *pip,
                "download",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-binary",
                ":all:",
                f"nicos=={NICOS_VERSION}",
                "-d",
                dl,
            ],
            log,
            work,
        )
        archives = sorted(dl.glob("nicos-*.tar.gz"))
        if not archives:
            raise RuntimeError(f"pip download left no nicos archive in {dl}")
        _extract(archives[0], work)
        tree = work / f"nicos-{NICOS_VERSION}"
        if not (tree / "nicos" / "clients" / "base.py").is_file():
            raise RuntimeError(f"unexpected archive layout in {archives[0]}")
        # sanity check: the client, the daemon's controller and the script
        # commands import
        _run(
            [
                py,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); "
                "import nicos.clients.base, nicospyctl.pyctl, nicos.commands.standard; "
                "print('import ok', nicos.clients.base.__file__)",
                tree,
            ],
            log,
            work,
        )
        # move into place: drop whatever an older build left, then rename
        target = _env_from(cache)
        (cache / MARKER).unlink(missing_ok=True)
        for old in (cache / "venv", target.tree):
            if old.exists():
                trash = Path(tempfile.mkdtemp(prefix=".old-", dir=cache))
                old.rename(trash / old.name)
        venv.rename(cache / "venv")
        tree.rename(target.tree)
        marker = {
            "wanted": dict(wanted),
            "base_python": base_python,
            "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        tmp_marker = cache / (MARKER + ".tmp")
        tmp_marker.write_text(json.dumps(marker, indent=1) + "\n")
        tmp_marker.replace(cache / MARKER)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for stale in cache.glob(".old-*"):
            shutil.rmtree(stale, ignore_errors=True)


def ensure_upstream(cache: Path | None = None, *, force: bool = False) -> UpstreamEnv:
    """Return the upstream environment, building it first if needed.

    Idempotent and safe to call from several processes at once (an flock on
    ``<cache>/.lock`` serialises builds; the others wait and then find it
    ready).  When already built it only reads the marker file.
    Raises RuntimeError (with the tail of the build log) when the build fails.
    """
    cache = Path(cache).expanduser().resolve() if cache is not None else default_cache()
    base_python = os.environ.get(ENV_BASE_PYTHON) or sys.executable
    wanted = _wanted()
    if not force and _is_ready(cache, wanted):
        return _env_from(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / LOCKFILE, LOCK_TIMEOUT):
        if force or not _is_ready(cache, wanted):
            _build(cache, base_python, wanted)
    return _env_from(cache)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: build if needed and print the locations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"default: ${ENV_CACHE} or .cache/upstream"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if ready")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    start = time.monotonic()
    env = ensure_upstream(args.cache, force=args.force)
    took = time.monotonic() - start
    info = {
        "root": str(env.root),
        "python": str(env.python),
        "tree": str(env.tree),
        "driver": str(env.driver),
        "version": env.version,
        "seconds": round(took, 2),
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
