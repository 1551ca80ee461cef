"""OpenVINO on CPUs with native bfloat16 (Intel AMX, AVX-512 BF16): the ``bf16`` artifact.

Why: on such a CPU, OpenVINO runs open_nsfw in bf16 about 4-5x faster than ONNX
Runtime runs it in fp32, and its scores stay within ~0.002 of fp32, ten times closer
than the int8 build's (ONNX Runtime has no bf16 convolutions on x86, and its int8
kernels use VNNI, not AMX). The artifact is OpenVINO's compiled model for this CPU,
exported as one blob: loading it takes tens of milliseconds and nothing is compiled
at scan time. A blob is tied to the OpenVINO version and CPU that made it; a host
that cannot import it falls back to the next artifact (see ``models.loader``).

OpenVINO is optional (``pip install 'photosentry[openvino]'``); without it, or on a
CPU without native bf16, no ``bf16`` artifact is built or selected.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelUnavailable

PROVIDER = "OpenVINO CPU bf16"
"""How a verdict names the runtime that scored it (next to ONNX Runtime's provider names)."""

INSTALL_HINT = "pip install 'photosentry[openvino]'"


@functools.cache
def _core() -> Any:
    import openvino as ov  # optional: callers check bf16_unavailable() first

    return ov.Core()


def version() -> str:
    """The installed OpenVINO release ("" without it); a blob loads only in the release that made it."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("openvino")
    except PackageNotFoundError:
        return ""


@functools.cache
def bf16_unavailable() -> str | None:
    """None where this host can run the bf16 artifact, else why not (for logs and --help)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"OpenVINO is not installed ({INSTALL_HINT})"
    try:
        caps = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError as exc:  # no CPU plugin: a broken install
        return f"OpenVINO has no usable CPU device: {exc}"
    if "BF16" not in caps:
        return "this CPU has no native bf16 (Intel AMX or AVX-512 BF16); bf16 would be emulated, slower than fp32"
    return None


def _config(threads: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def build_bf16(source: Path, dest: Path, *, threads: int | None = 1) -> str:
    """Compile the ONNX model ``source`` for this CPU in bf16 and export it to ``dest``.

    Raises:
        ModelUnavailable: OpenVINO is missing, the CPU lacks native bf16, or the model
            does not convert.
    """
    why_not = bf16_unavailable()
    if why_not:
        raise ModelUnavailable(why_not)
    try:
        compiled = _core().compile_model(_core().read_model(str(source)), "CPU", _config(threads))
        dest.write_bytes(compiled.export_model().getvalue())
    except RuntimeError as exc:
        raise ModelUnavailable(f"OpenVINO could not compile {source.name}: {exc}") from exc
    return f"bf16 on the CPU's native bf16 units (OpenVINO {version()} compiled model)"


@dataclass(frozen=True)
class _Port:
    """The one attribute of an ONNX Runtime NodeArg that callers read."""

    name: str


class OpenVinoSession:
    """An exported bf16 model behind the part of ``onnxruntime.InferenceSession`` that
    the classifier uses (``get_inputs``, ``get_providers``, ``run``), so the rest of
    the pipeline does not care which runtime scores a photo.
    """

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        why_not = bf16_unavailable()
        if why_not:
            raise ModelUnavailable(f"cannot run {path.name}: {why_not}")
        try:
            self._compiled = _core().import_model(Path(path).read_bytes(), "CPU", _config(threads))
        except (RuntimeError, OSError) as exc:
            raise ModelUnavailable(
                f"OpenVINO {version()} could not load {str(path)!r} (made by another version or CPU?): {exc}"
            ) from exc
        self._request = self._compiled.create_infer_request()
        # One infer request holds its own buffers; ONNX Runtime sessions may be shared
        # between threads, so this one is too, one call at a time.
        self._lock = threading.Lock()

    def get_inputs(self) -> list[_Port]:
        return [_Port(self._compiled.inputs[0].get_any_name())]

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feeds.values()
        with self._lock:
            result = self._request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
            return [np.array(result[port]) for port in self._compiled.outputs]
