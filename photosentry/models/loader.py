"""Load a classifier the way a worker should run it on this host.

The best verified artifact for the host (fp16 with CUDA/TensorRT; on a CPU the faster
of bf16 and int8) from the data directory, else the published fp32 file; one log line
says which, because "which build made this decision" is the first question after a
surprising verdict. An artifact that fails its sha256 check or will not load (a bf16
blob from another OpenVINO version) is skipped with a warning: the scan falls back to
the next artifact, then to fp32, rather than failing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelUnavailable
from .adapter import ClassifierManifest, ManifestClassifier
from .artifacts import artifacts_for_host
from .manifest import file_sha256, resolve_model_file
from .registry import DEFAULT_CLASSIFIER

log = logging.getLogger(__name__)


def load_classifier(
    manifest: ClassifierManifest | str | Path = DEFAULT_CLASSIFIER,
    *,
    data_dir: Path | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    use_artifacts: bool = True,
) -> ManifestClassifier:
    """The classifier for ``manifest`` (a shipped id, a TOML path or a loaded manifest).

    Raises:
        ModelUnavailable: the fp32 model itself cannot be resolved or loaded.
    """
    spec = manifest if isinstance(manifest, ClassifierManifest) else ClassifierManifest.load(manifest)
    artifacts = []
    if use_artifacts and data_dir is not None:
        source_sha = file_sha256(resolve_model_file(spec.model))
        artifacts = artifacts_for_host(data_dir, model_id=spec.model.id, source_sha256=source_sha, providers=providers)
    for artifact in artifacts:
        try:
            clf = ManifestClassifier(spec, artifact=artifact, providers=providers, threads=threads)
        except ModelUnavailable as exc:
            log.warning("artifact %s unusable (%s); trying the next build", artifact.file, exc)
        else:
            log.info("model %s: running %s artifact %s on %s (%s)", spec.model.id, clf.variant, clf.path,
                     clf.provider, artifact.describe())
            return clf
    clf = ManifestClassifier(spec, providers=providers, threads=threads)
    log.info("model %s: running fp32 %s on %s", spec.model.id, clf.path, clf.provider)
    return clf
