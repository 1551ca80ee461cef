"""`photosentry models list | optimize | verify`: host-specific builds of the models."""

from __future__ import annotations

import json
from typing import Any

import click

from ..config import data_dir, ensure_private_dir
from ..errors import ModelUnavailable, PhotoSentryError
from ..models.registry import DEFAULT_CLASSIFIER
from .root import ExitCode, SetupError, cli


@cli.group()
def models() -> None:
    """Models: what is installed, and optimised builds for this host.

    \b
    photosentry models list                                   models, artifacts, what this host runs
    photosentry models build                                  the default build, now
    photosentry models optimize --calibration ~/sample-uploads
    photosentry models verify                                 re-measure every artifact

    Out of the box, the first worker or `scan` on a data directory builds an int8 (or
    bf16) model in the background, calibrated and checked on photos shipped with
    PhotoSentry, and runs the published fp32 model until it is verified. `optimize`
    builds int8, bf16 and fp16 models calibrated on your own photos instead. Either
    way a build whose score moves more than 0.03 from the original on any calibration
    photo, or that would change any allow/quarantine/block decision on them, is
    refused. Workers and `scan` run the best verified build for their host, and say which.
    """


def _thresholds(policy_path: str | None, model_id: str) -> list[tuple[float | None, float | None]]:
    """Every (quarantine, block) pair the policy could apply to ``model_id``."""
    from ..worker.policy import Policy

    try:
        policy = Policy.from_file(policy_path) if policy_path else Policy.default()
    except PhotoSentryError as exc:
        raise SetupError(str(exc)) from exc
    pairs = policy.decision_thresholds(model_id)
    if not pairs:
        raise SetupError(f"the policy has no [models.{model_id}] thresholds: nothing to keep decisions against")
    return pairs


def _spec(model: str, manifest: str | None) -> Any:
    from ..models.adapter import ClassifierManifest

    try:
        return ClassifierManifest.load(manifest or model)
    except (ModelUnavailable, ValueError) as exc:
        raise SetupError(str(exc)) from exc


def _store(ctx: click.Context) -> Any:
    from ..models.artifacts import ArtifactStore

    return ArtifactStore(ensure_private_dir(data_dir(ctx.obj["data_dir"])))


_model_options = [
    click.option("--model", default=DEFAULT_CLASSIFIER, show_default=True, help="Shipped model id."),
    click.option("--model-manifest", "manifest", type=click.Path(exists=True, dir_okay=False),
                 help="An operator's model manifest (TOML) instead of a shipped model."),
    click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False), envvar="PHOTOSENTRY_POLICY",
                 help="Policy whose thresholds decisions are checked against. Default: the shipped policy."),
    click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Threads when timing (1 = one worker process per core)."),
]


def model_options(f):  # type: ignore[no-untyped-def]
    for option in reversed(_model_options):
        f = option(f)
    return f


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """Shipped models (resolved and checked by sha256), optimised artifacts, and what
    this host would run.

    \b
    Example:
      photosentry models list
    """
    from ..models.artifacts import Host, select_artifact
    from ..models.openvino_runtime import bf16_unavailable
    from ..models.openvino_runtime import version as openvino_version
    from ..models.manifest import BUILTIN_MANIFESTS, builtin, file_sha256, resolve_model_file

    host = Host.current()
    artifacts = _store(ctx).load()
    rows: list[dict[str, Any]] = []
    for name in BUILTIN_MANIFESTS:
        m = builtin(name)
        row: dict[str, Any] = {"model": m.id, "version": m.version, "kind": m.kind, "license": m.license}
        try:
            path = resolve_model_file(m)
            row.update(file=str(path), status="ok")
            chosen = select_artifact(artifacts, model_id=m.id, source_sha256=file_sha256(path), host=host)
            row["runs"] = chosen.variant if chosen else "fp32"
        except ModelUnavailable as exc:
            row.update(status="unavailable", error=str(exc), runs="-")
        rows.append(row)
    arts = []
    for a in artifacts:
        try:
            a.verified_path()
            file_ok = "ok"
        except ModelUnavailable:
            file_ok = "missing or altered"
        arts.append({**a.to_dict(), "file_status": file_ok, "passes": a.passes})
    if as_json:
        click.echo(json.dumps({"host_providers": list(host.providers), "cpu_bf16": host.cpu_bf16,
                               "models": rows, "artifacts": arts}, indent=2))
        return
    click.echo(f"host execution providers: {', '.join(host.providers)}")
    click.echo(f"bf16 on this CPU: {'yes (OpenVINO ' + openvino_version() + ')' if host.cpu_bf16 else bf16_unavailable()}")
    click.echo(f"{'MODEL':<14}{'KIND':<11}{'STATUS':<13}{'RUNS':<6}LICENCE")
    for r in rows:
        click.echo(f"{r['model']:<14}{r['kind']:<11}{r['status']:<13}{r['runs']:<6}{r['license']}")
    click.echo("")
    from ..models.autobuild import BuildState

    for model_id, entry in sorted(BuildState(_store(ctx)).load().items()):
        if isinstance(entry, dict):
            click.echo(f"default build of {model_id}: {entry.get('outcome')} at {entry.get('at')}"
                       f" (onnxruntime {entry.get('key', {}).get('onnxruntime')}): {entry.get('detail')}")
    if not arts:
        click.echo("no optimised artifacts yet (the first worker or scan builds one; photosentry models build)")
    for a in arts:
        state = "verified" if a["passes"] and a["file_status"] == "ok" else "REFUSED" if not a["passes"] else a["file_status"]
        m = a["measurements"]
        click.echo(f"{a['model_id']} {a['variant']:<5} {state:<9} drift max {a['drift']['max']:.4f},"
                   f" {a['flips']} flips, {a['calibration']['photos']} photos, {m.get('ms', 0):.2f} ms vs fp32"
                   f" {m.get('fp32_ms', 0):.2f} ms ({m.get('speedup', 0):.2f}x); {a['method']}")


@models.command()
@model_options
@click.option("--no-wait", is_flag=True, help="Return at once (exit 1) if another process is building.")
@click.pass_context
def build(ctx: click.Context, model: str, manifest: str | None, policy_path: str | None, threads: int,
          no_wait: bool) -> None:
    """Make the default optimised build now, in the foreground: what workers and `scan`
    otherwise start in the background on a fresh data directory.

    It builds what this host runs (int8; bf16 where the CPU has native bf16 and
    OpenVINO is installed), calibrated and checked on photos shipped with PhotoSentry:
    refused if any score moves more than 0.03 from the published model or any decision
    changes under the policy. Nothing to do if a verified build for this model file and
    ONNX Runtime version exists. Takes seconds (bf16) to minutes (int8). Useful in a
    deploy step (an image build) so the first worker starts fast; to calibrate on your
    own uploads use `photosentry models optimize`.

    Exit status 0 if a verified build is in place, 1 if it was refused or another
    process is building (with --no-wait).

    \b
    Examples:
      photosentry models build
      PHOTOSENTRY_HOME=/srv/photosentry photosentry models build --policy /etc/photosentry/policy.toml
    """
    from ..models.autobuild import build as run_build

    spec = _spec(model, manifest)
    pairs = _thresholds(policy_path, spec.model.id)
    store = _store(ctx)
    click.echo(f"default build of {spec.model.id} in {store.home}, thresholds {pairs}")
    try:
        result = run_build(spec, store.home.parent, pairs, threads=threads, wait=not no_wait, progress=click.echo)
    except ModelUnavailable as exc:
        raise SetupError(str(exc)) from exc
    click.echo(f"{result.outcome}: {result.detail}" + (f" ({result.seconds:.0f} s)" if result.seconds else ""))
    ctx.exit(ExitCode.ALLOWED if result.outcome in ("built", "current") else ExitCode.FLAGGED)


@models.command()
@click.option("--calibration", "calibration", multiple=True, required=True, type=click.Path(exists=True),
              help="Real photos (files or folders) like the ones you scan, to calibrate and check on. Repeatable.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(["int8", "bf16", "fp16"]),
              help="Build only this (default: all this host can build). int8 and bf16 are for CPU hosts"
                   " (bf16 needs OpenVINO and a CPU with native bf16, i.e. Intel AMX), fp16 for GPU hosts.")
@click.option("--method", "methods", multiple=True,
              help="int8 methods to try (default: all of qdq-minmax, qdq-percentile, qoperator-minmax,"
                   " qoperator-percentile, dynamic); the fastest that passes is kept.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use at most this many photos.")
@model_options
@click.pass_context
def optimize(ctx: click.Context, calibration: tuple[str, ...], variants: tuple[str, ...], methods: tuple[str, ...],
             limit: int | None, model: str, manifest: str | None, policy_path: str | None, threads: int) -> None:
    """Build int8, bf16 and fp16 versions of a model for this data directory, keep
    the fastest that changes no decision, and record how each was checked. Workers
    then run the fastest kept build their host can run (see `models list`).

    Every candidate is timed on the calibration photos and its scores compared with
    the original (fp32) model's: it is refused if any score moves more than 0.03 or
    any decision (under every profile of the policy) changes. Takes a minute or two.
    Exit status 0 if every variant asked for was kept, 1 if one was refused.

    \b
    Examples:
      photosentry models optimize --calibration /srv/uploads/sample-2026-11
      photosentry models optimize --calibration a/ --calibration b/ --variant int8 --threads 1
    """
    from ..models.optimize import INT8_METHODS, load_calibration
    from ..models.optimize import optimize as run_optimize

    import importlib.util

    missing = [m for m in ("onnx", "onnxconverter_common") if importlib.util.find_spec(m) is None]
    if missing:
        raise SetupError(f"optimize needs {', '.join(missing)}: pip install 'photosentry[optimize]'")
    bad = [m for m in methods if m not in INT8_METHODS]
    if bad:
        raise click.BadParameter(f"{bad} (known: {', '.join(INT8_METHODS)})", param_hint="--method")
    spec = _spec(model, manifest)
    pairs = _thresholds(policy_path, spec.model.id)
    try:
        cal = load_calibration(calibration, limit=limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--calibration") from exc
    click.echo(f"calibrating on {len(cal.files)} photos (set {cal.digest[:12]}), thresholds {pairs}")
    try:
        reports = run_optimize(spec, _store(ctx), cal, pairs, variants=variants or None,
                               methods=methods or INT8_METHODS, threads=threads, progress=click.echo)
    except ModelUnavailable as exc:
        raise SetupError(str(exc)) from exc
    refused = False
    for r in reports:
        if r.artifact is None:
            refused = True
            click.echo(f"REFUSED {r.variant}: {r.refused}")
        else:
            click.echo(f"kept {r.variant}: {r.artifact.path} - {r.artifact.describe()}")
    ctx.exit(ExitCode.FLAGGED if refused else ExitCode.ALLOWED)


@models.command()
@click.option("--calibration", "calibration", multiple=True, type=click.Path(exists=True),
              help="Photos to re-measure on. Default: the artifact's own calibration photos (checked by digest).")
@model_options
@click.pass_context
def verify(ctx: click.Context, calibration: tuple[str, ...], model: str, manifest: str | None,
           policy_path: str | None, threads: int) -> None:
    """Re-measure every artifact of a model against the original and refuse the ones
    that drift more than 0.03 or flip a decision: a refused artifact is never run.

    Run it after upgrading onnxruntime, changing the policy's thresholds, or moving
    the data directory to other hardware. Exit status 0 if all pass, 1 otherwise.

    \b
    Examples:
      photosentry models verify
      photosentry models verify --calibration /srv/uploads/sample-2026-12
    """
    from dataclasses import replace
    from datetime import datetime, timezone

    from ..models.optimize import calibration_from_record, drift_record, load_calibration
    from ..models.optimize import verify as run_verify

    spec = _spec(model, manifest)
    pairs = _thresholds(policy_path, spec.model.id)
    store = _store(ctx)
    artifacts = [a for a in store.load() if a.model_id == spec.model.id]
    if not artifacts:
        click.echo(f"no artifacts of {spec.model.id} in {store.home}")
        ctx.exit(ExitCode.ALLOWED)
    failed = False
    for a in artifacts:
        try:
            cal = load_calibration(calibration) if calibration else calibration_from_record(a.calibration)
            ev = run_verify(spec, a, cal, pairs, threads=threads, tolerance=a.tolerance)
        except (ModelUnavailable, ValueError) as exc:
            failed = True
            click.echo(f"REFUSED {a.model_id} {a.variant}: {exc}")
            continue
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        store.save(replace(a, drift=drift_record(ev),
                           flips=ev.flips, verified_at=now,
                           calibration=cal.record() if calibration else a.calibration))
        if ev.passes:
            click.echo(f"ok {a.model_id} {a.variant}: drift max {ev.drift_max:.4f}, 0 flips on {len(cal.files)} photos,"
                       f" {ev.ms_median:.2f} ms")
        else:
            failed = True
            click.echo(f"REFUSED {a.model_id} {a.variant}: {ev.why_refused()} on {len(cal.files)} photos;"
                       " workers will use fp32")
    ctx.exit(ExitCode.FLAGGED if failed else ExitCode.ALLOWED)

