"""segloop models inside bioimage.io model packages (zip files made by ``segloop export``).

``segloop export`` puts the original segloop model file (``<name>.safetensors``: raw
tensors plus the JSON config and metadata header) into the package as an attachment
named in its ``rdf.yaml``. This module finds that file with the standard library alone,
so ``--model package.zip`` works without bioimageio installed. Nothing in the package is
unpickled or executed: only the safetensors file is read.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from .metadata import FORMAT

PACKAGE_SUFFIX = ".zip"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Largest model file read from a package (the shipped ones are 4 MB).
MAX_MODEL_BYTES = 2 * 1024**3
#: Largest rdf.yaml read from a package.
MAX_RDF_BYTES = 16 * 1024**2


class PackageError(ValueError):
    """A zip file that is not a segloop-exported bioimage.io model package."""


def is_package(path: str | os.PathLike) -> bool:
    """Whether a model reference names a zip file (a bioimage.io package)."""
    return Path(path).suffix.lower() == PACKAGE_SUFFIX


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise PackageError(f"{info.filename} in the package is too large ({info.file_size} B)")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise PackageError(f"{info.filename} in the package is damaged ({exc})") from exc
    if len(data) > limit:
        raise PackageError(f"{info.filename} in the package is too large")
    return data


def safetensors_header(data: bytes) -> dict[str, str]:
    """The string metadata (``__metadata__``) of a safetensors file held in memory."""
    if len(data) < 8:
        return {}
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        return {}
    try:
        header = json.loads(data[8 : 8 + length])
    except ValueError:
        return {}
    found = header.get("__metadata__") if isinstance(header, dict) else None
    return found if isinstance(found, dict) else {}


def package_model(path: str | os.PathLike) -> tuple[str, bytes]:
    """Name and bytes of the segloop model file inside a bioimage.io package.

    The file is a ``.safetensors`` member at the top of the zip whose name appears in the
    package's ``rdf.yaml`` (segloop lists it under ``attachments``) and whose header has
    segloop's model format.

    Raises
    ------
    PackageError
        When the file is no zip, no bioimage.io package, or a package without a segloop
        model file.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{path} is not a readable zip file ({exc})") from exc
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        rdf_name = next((name for name in RDF_NAMES if name in members), None)
        if rdf_name is None:
            raise PackageError(f"{path} is not a bioimage.io model package (no rdf.yaml)")
        rdf = _read_member(archive, members[rdf_name], MAX_RDF_BYTES).decode("utf-8", "replace")
        for name, info in members.items():
            if "/" in name or not name.endswith(".safetensors") or name not in rdf:
                continue
            data = _read_member(archive, info, MAX_MODEL_BYTES)
            if safetensors_header(data).get("format") == FORMAT:
                return name, data
    raise PackageError(
        f"{path} is a bioimage.io package but not one made by `segloop export` (its "
        "rdf.yaml names no segloop .safetensors model file); run it with bioimageio.core"
    )


def package_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON config and metadata of the segloop model inside a package (no weights read)."""
    name, data = package_model(path)
    header = safetensors_header(data)
    try:
        config = json.loads(header["config"])
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise PackageError(f"{path}: {name} has a broken model config ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(metadata, dict):
        raise PackageError(f"{path}: {name} has a broken model config")
    return config, metadata
