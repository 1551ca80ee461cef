"""ONNX Runtime sessions: one owner for providers, threads and the loaded graph.

Providers are chosen from what the host has and what the caller asks: an explicit
list wins (filtered to what is installed, CPU always last as the fallback);
otherwise TensorRT, then CUDA, then CPU. The chosen provider is logged, because a
silent fall back to CPU is the most common performance surprise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ..errors import ModelUnavailable

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)
"""Best first. Providers such as Azure's that onnxruntime lists but cannot run a
local model are never picked automatically."""


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """The providers to use, best first, always ending with the CPU fallback."""
    available = set(ort.get_available_providers())
    wanted = list(requested) if requested else list(PROVIDER_PREFERENCE)
    missing = [p for p in wanted if p not in available]
    if requested and missing:
        log.warning("execution providers %s are not available here; falling back to %s", missing, CPU)
    chosen = [p for p in wanted if p in available and p != CPU]
    return [*chosen, CPU]


ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
RUNTIMES = (ONNXRUNTIME, OPENVINO)


def open_session(
    path: Path, *, providers: Sequence[str] | None = None, threads: int | None = None, runtime: str = ONNXRUNTIME
) -> Any:
    """Load ``path`` into an InferenceSession with the chosen providers and thread count;
    ``runtime="openvino"``: an exported OpenVINO model (the bf16 artifact) behind the
    same interface."""
    if runtime not in RUNTIMES:
        raise ModelUnavailable(f"unknown model runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    if runtime == OPENVINO:
        from .openvino_runtime import OpenVinoSession

        session: Any = OpenVinoSession(path, threads=threads)
    else:
        session = _onnxruntime_session(path, providers, threads)
    log.info("loaded %s with provider %s", path.name, session.get_providers()[0])
    return session


def _onnxruntime_session(path: Path, providers: Sequence[str] | None, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=choose_providers(providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelUnavailable(f"could not load {str(path)!r}: {exc}") from exc
    return session
