"""Model versions of a correction project, listed from file headers without torch.

Kept free of torch so the napari widgets can list versions without slowing start-up.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metadata import read_metadata

VERSION_NAME = re.compile(r"v(\d+)\.safetensors")


@dataclass
class VersionInfo:
    """One saved model version: ``models/v<N>.safetensors`` and its metadata."""

    version: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def finetune(self) -> dict[str, Any]:
        return self.metadata.get("finetune", {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.finetune.get("metrics", {})

    @property
    def stopped(self) -> bool:
        return bool(self.finetune.get("stopped"))


def list_versions(models_dir: str | os.PathLike) -> list[VersionInfo]:
    """Versions in ``models_dir``, oldest first; unreadable (half-copied) files are skipped."""
    folder = Path(models_dir).expanduser()
    found = []
    for path in folder.glob("v*.safetensors") if folder.is_dir() else []:
        match = VERSION_NAME.fullmatch(path.name)
        if not match:
            continue
        try:
            found.append(VersionInfo(int(match.group(1)), path, read_metadata(path)))
        except (OSError, ValueError, RuntimeError):
            continue
    return sorted(found, key=lambda v: v.version)
