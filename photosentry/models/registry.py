"""Which models PhotoSentry runs, by name: the one place a name becomes a model.

The classifier every scan runs is :data:`DEFAULT_CLASSIFIER` (a shipped manifest id;
an operator's manifest may replace it). Second opinions run beside it and add their
labels to the verdict; :data:`SECOND_OPINIONS` names them for ``scan --second-model``
(its ``click.Choice``) and for the workers' ``PHOTOSENTRY_SECOND_MODELS``, as rembg's
``sessions`` dict names its sessions. Building one imports its module then, not here:
NudeNet needs OpenCV and an optional, AGPL-3.0 package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import RegistryError
from .manifest import BUILTIN_MANIFESTS

if TYPE_CHECKING:
    from .classifier import NudityClassifier

DEFAULT_CLASSIFIER = "open_nsfw"
"""The shipped classifier a scan, a worker and a rescan run unless told otherwise."""


@dataclass(frozen=True)
class SecondOpinion:
    """A model that runs beside the classifier; its labels explain the verdict."""

    #: What ``--second-model`` and ``PHOTOSENTRY_SECOND_MODELS`` call it.
    name: str
    #: Its shipped manifest id (file, sha256, licence).
    manifest: str
    _build: Callable[[int | None, Sequence[str] | None], NudityClassifier]
    _notice: Callable[[], str]

    def build(self, *, threads: int | None = None, providers: Sequence[str] | None = None) -> NudityClassifier:
        """Load the model (raises ModelUnavailable when its file or package is missing)."""
        return self._build(threads, providers)

    def notice(self) -> str:
        """What to show wherever it is enabled (e.g. its licence's obligations)."""
        return self._notice()


def _nudenet(threads: int | None, providers: Sequence[str] | None) -> NudityClassifier:
    from .nudenet import NudeNetDetector

    return NudeNetDetector(threads=threads, providers=providers)


def _nudenet_notice() -> str:
    from .nudenet import licence_notice

    return licence_notice()


def _registry(opinions: Iterable[SecondOpinion]) -> Mapping[str, SecondOpinion]:
    out: dict[str, SecondOpinion] = {}
    for opinion in opinions:
        if opinion.name in out:
            raise RegistryError(f"second-opinion model {opinion.name!r} is registered twice")
        if opinion.manifest not in BUILTIN_MANIFESTS:
            raise RegistryError(f"second-opinion model {opinion.name!r}: no shipped manifest {opinion.manifest!r}")
        out[opinion.name] = opinion
    if DEFAULT_CLASSIFIER not in BUILTIN_MANIFESTS:
        raise RegistryError(f"the default classifier {DEFAULT_CLASSIFIER!r} has no shipped manifest")
    return MappingProxyType(out)


#: Every second opinion, by name.
SECOND_OPINIONS: Mapping[str, SecondOpinion] = _registry([
    SecondOpinion("nudenet", "nudenet_320n", _nudenet, _nudenet_notice),
])

#: Their names, for ``click.Choice``.
SECOND_OPINION_NAMES: tuple[str, ...] = tuple(SECOND_OPINIONS)


def second_opinions(names: Iterable[str]) -> tuple[SecondOpinion, ...]:
    """The registered second opinions among ``names``, each once, in registry order
    (other names are ignored, as ``PHOTOSENTRY_SECOND_MODELS`` always ignored them)."""
    wanted = set(names)
    return tuple(opinion for name, opinion in SECOND_OPINIONS.items() if name in wanted)


__all__ = ["DEFAULT_CLASSIFIER", "SECOND_OPINIONS", "SECOND_OPINION_NAMES", "SecondOpinion", "second_opinions"]
