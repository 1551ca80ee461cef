"""Model manifests: which ONNX file a model is, where it comes from, and its checksum.

A manifest is a TOML file (the shipped ones live in ``photosentry/models/manifests/``):
the model's identity and licence, its ``[file]`` (an installed package's resource or a
configured path, with the sha256 it must have), and how to feed it and read it
(``[input]``, ``[output]``; see :mod:`photosentry.models.adapter`).

Model files are only ever *resolved* - from an installed package or a configured
path - and checked against the sha256 pinned here. Nothing is downloaded at run time:
a missing or altered file is a :class:`ModelUnavailable`, and the scan fails closed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailable

BUILTIN_MANIFESTS = ("open_nsfw", "nudenet_320n")
"""Manifests shipped with PhotoSentry, by id."""


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
    #: A configured file instead of a package resource (operator-supplied models).
    path: str | None = None
    #: ``classifier`` (one probability per label) or ``detector`` (labelled boxes).
    kind: str = "classifier"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<manifest>") -> "ModelManifest":
        file = raw.get("file")
        if not isinstance(file, Mapping):
            raise ValueError(f"{source}: a manifest needs a [file] table")
        for key in ("id", "version"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ValueError(f"{source}: `{key}` must be a non-empty string")
        sha = str(file.get("sha256", "")).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"{source}: [file].sha256 must be 64 hex digits, got {file.get('sha256')!r}")
        path = file.get("path")
        if path is None and not (file.get("package") and file.get("resource")):
            raise ValueError(f"{source}: [file] needs `path`, or `package` and `resource`")
        kind = str(raw.get("kind", "classifier"))
        if kind not in ("classifier", "detector"):
            raise ValueError(f"{source}: kind must be 'classifier' or 'detector', got {kind!r}")
        if path is not None and not Path(str(path)).is_absolute():
            # Relative paths are taken from the manifest's own folder.
            base = Path(source).parent if source not in ("<manifest>", "") else Path.cwd()
            path = str(base / str(path))
        return cls(
            id=raw["id"],
            version=raw["version"],
            package=str(file.get("package", "")),
            resource=str(file.get("resource", "")),
            sha256=sha,
            license=str(raw.get("license", "unknown")),
            description=str(raw.get("description", "")),
            path=None if path is None else str(path),
            kind=kind,
        )


def read_manifest(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """The raw manifest table of a shipped model id or a TOML file, and its source."""
    text: str
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_MANIFESTS:
        source = f"<builtin {name_or_path}>"
        text = importlib.resources.files(__package__).joinpath("manifests", f"{name_or_path}.toml").read_text("utf-8")
    else:
        source = str(name_or_path)
        try:
            text = Path(name_or_path).read_text("utf-8")
        except OSError as exc:
            raise ModelUnavailable(f"cannot read model manifest {source!r}: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise ModelUnavailable(f"{source}: not valid TOML: {exc}") from exc


def builtin(name: str) -> ModelManifest:
    raw, source = read_manifest(name)
    return ModelManifest.from_dict(raw, source=source)


OPEN_NSFW = builtin("open_nsfw")
NUDENET_320N = builtin("nudenet_320n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_file(manifest: ModelManifest, path: str | Path | None = None) -> Path:
    """The verified model file: ``path`` if given, else the manifest's path, else the
    one the package ships.

    Raises:
        ModelUnavailable: the file is missing or its sha256 differs from the manifest.
    """
    if path is None and manifest.path is not None:
        path = manifest.path
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
