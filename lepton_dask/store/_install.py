"""Build the FerretDB binary used as the embedded MongoDB-compatible server.

FerretDB v1.x with its SQLite backend is pure Go, so ``go build`` is all it
takes. Two details of doing it from a Go module (rather than FerretDB's git
checkout) are handled here:

* ``go install github.com/FerretDB/FerretDB/cmd/ferretdb@vX`` builds a binary
  that panics at start: ``build/version/version.txt`` is not in the module zip
  (FerretDB issues #2982, #4889). We copy the module source out of Go's module
  cache, write that file, and build from the copy.
* ``go install pkg@version`` also asks the module proxy for the module's
  version list (to report deprecations). ``go mod download`` of the exact
  version needs only that version's files.

The version defaults to v1.24.2: the module proxy that these machines use
refuses v1.24.1 (HTTP 403 on its ``.info``), and v1.24.2 is the next patch
release of the same line. ``LEPTON_FERRETDB_VERSION`` overrides it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile

logger = logging.getLogger(__name__)

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
DEFAULT_FERRETDB_VERSION = "v1.24.2"


def ferretdb_version() -> str:
    """The FerretDB version to build and run.

    >>> ferretdb_version().startswith("v1.")
    True
    """
    return os.environ.get("LEPTON_FERRETDB_VERSION", DEFAULT_FERRETDB_VERSION)


def cache_dir() -> str:
    """Per-user cache directory of lepton-dask (binaries survive fresh clones).

    >>> cache_dir().endswith("lepton-dask")
    True
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "lepton-dask")


def ferretdb_path(version: str | None = None) -> str:
    """Where the FerretDB binary of ``version`` is (or will be) installed.

    >>> os.path.basename(ferretdb_path("v1.24.2"))
    'ferretdb-v1.24.2'
    """
    return os.path.join(cache_dir(), "bin", f"ferretdb-{version or ferretdb_version()}")


def _binary_works(path: str, version: str) -> bool:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and f"version: {version}" in out.stdout


def install_ferretdb(
    version: str | None = None, *, force: bool = False, echo: bool = False
) -> str:
    """Build FerretDB ``version`` with the Go toolchain; return the binary's path.

    Idempotent: a working binary already in the cache is reused. The build is
    written to a temporary name and renamed into place, so an interrupted build
    never leaves a broken binary behind.

    Parameters
    ----------
    version : str, optional
        A FerretDB v1 release tag; default :func:`ferretdb_version`.
    force : bool
        Rebuild even when a working binary is cached.
    echo : bool
        Say what it does on stderr, and show Go's output (the packages as
        they compile) as it comes: a cold build takes minutes.

    Examples
    --------
    >>> os.path.exists(install_ferretdb())  # cached after the first build
    True
    """
    version = version or ferretdb_version()
    dest = ferretdb_path(version)

    def say(msg: str) -> None:
        logger.info(msg)
        if echo:
            print(f"lepton-dask mongo install: {msg}", file=sys.stderr, flush=True)

    if not force and os.path.exists(dest) and _binary_works(dest, version):
        say(f"FerretDB {version} already built: {dest}")
        return dest
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            "building the embedded FerretDB server needs the Go toolchain (go >= "
            "1.24, as FerretDB v1.24 needs) on PATH; alternatively put `mongod` on PATH or set "
            "lepton.store.uri / LEPTON_MONGO_URI to an existing MongoDB"
        )
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
    say(f"downloading the FerretDB {version} source with {go}")
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{version}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    info = {}
    if out.stdout.strip():
        try:
            info = json.loads(out.stdout)
        except json.JSONDecodeError:
            info = {}
    if out.returncode != 0 or "Dir" not in info:
        detail = info.get("Error") or out.stderr.strip() or out.stdout.strip()
        raise RuntimeError(f"could not download FerretDB {version}: {detail}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferretdb-build-") as tmp:
        src = os.path.join(tmp, "src")
        shutil.copytree(info["Dir"], src)
        for root, dirs, files in os.walk(src):
            for n in dirs + files:
                p = os.path.join(root, n)
                os.chmod(p, os.stat(p).st_mode | 0o200)
        with open(os.path.join(src, "build", "version", "version.txt"), "w") as f:
            f.write(version + "\n")
        tmp_bin = dest + f".tmp-{os.getpid()}"
        say(
            f"building FerretDB {version} into {dest} (a few minutes cold; "
            "each package is listed as it compiles)"
            if echo
            else f"building FerretDB {version} into {dest}"
        )
        verbose = ["-v"] if echo else []
        build = subprocess.run(
            [go, "build", *verbose, "-trimpath", "-o", tmp_bin, "./cmd/ferretdb"],
            cwd=src,
            stdout=None if echo else subprocess.PIPE,
            stderr=None if echo else subprocess.PIPE,
            text=True,
            env=env,
            timeout=3600,
        )
        if build.returncode != 0:
            detail = "" if echo else f":\n{build.stderr}"
            raise RuntimeError(f"building FerretDB {version} failed{detail}")
        os.replace(tmp_bin, dest)
    if not _binary_works(dest, version):
        raise RuntimeError(f"the FerretDB binary built at {dest} does not run")
    say(f"built {dest}")
    return dest


def _main(argv: list[str]) -> int:  # pragma: no cover - run by the Makefile
    """``python lepton_dask/store/_install.py [--force] [--if-needed]``: the
    Makefile builds FerretDB with this file alone (standard library only),
    beside the virtualenv's pip install. ``--if-needed``: not when the
    embedded server will not use it (``LEPTON_MONGO_URI`` set, or ``mongod``
    on PATH)."""
    if "--if-needed" in argv:
        if os.environ.get("LEPTON_MONGO_URI"):
            print("LEPTON_MONGO_URI is set: no embedded server to build")
            return 0
        if shutil.which("mongod"):
            print(f"the embedded server will run {shutil.which('mongod')}")
            return 0
    try:
        print(install_ferretdb(force="--force" in argv, echo=True))
    except RuntimeError as e:
        print(f"lepton-dask mongo install: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
