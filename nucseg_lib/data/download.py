"""Downloading with a checksum and extracting archives safely (no path may leave the target folder)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from .common import DataError


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, sha256: str | None, target: Path) -> Path:
    """Download ``url`` to ``target`` unless a file with the right SHA-256 is already there.

    A file already at ``target`` with a wrong checksum raises :class:`DataError`
    (it is never silently replaced). Downloads use pooch, which verifies the hash.
    """
    target = Path(target)
    if target.exists():
        if sha256 is not None and sha256sum(target) != sha256:
            raise DataError(f"{target}: SHA-256 does not match the expected {sha256}; delete it and download again")
        return target
    import pooch

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = pooch.retrieve(
            url,
            known_hash=None if sha256 is None else f"sha256:{sha256}",
            fname=target.name,
            path=target.parent,
            progressbar=True,
        )
    except Exception as exc:
        raise DataError(
            f"cannot download {url} to {target} ({type(exc).__name__}: {exc}); "
            f"without network access, place the file there by hand"
        ) from exc
    return Path(path)


def safe_extract_zip(archive: str | Path, target: str | Path) -> Path:
    """Extract a zip archive into ``target``, refusing any member whose path escapes it.

    Extraction is atomic: members go to a hidden temporary folder inside ``target`` and
    are moved into place only when the whole archive extracted; a failure (corrupt
    member, full disk, interruption) leaves nothing that a later call could take as a
    complete dataset.
    """
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a valid zip archive ({exc})") from exc
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=target))
    try:
        with zf:
            for member in zf.infolist():
                dest = (target / member.filename).resolve()
                if dest != target and target not in dest.parents:
                    raise DataError(f"{archive}: member {member.filename!r} would be written outside {target}")
            try:
                zf.extractall(tmp)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{archive}: extraction failed ({type(exc).__name__}: {exc})") from exc
        for entry in sorted(tmp.iterdir()):
            dest = target / entry.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
