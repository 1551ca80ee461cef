"""`photosentry scan`: verdicts for local files, nothing moved."""

from __future__ import annotations

import sys
import time
from collections import Counter

import click

from ..errors import PhotoSentryError
from ..models.registry import DEFAULT_CLASSIFIER, SECOND_OPINION_NAMES
from .root import (
    ExitCode,
    SetupError,
    cli,
    close_store,
    context_pairs,
    open_store,
    walk_files,
)

# -- scan -------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per photo (JSON Lines) instead of a table.")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False), envvar="PHOTOSENTRY_POLICY",
              help="Policy TOML file. Default: the shipped policy (see README).")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE",
              help="Upload context the policy can use, e.g. --context recipient_is_minor=true. Repeatable.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads for the model. Default: all cores.")
@click.option("--provider", "providers", multiple=True,
              help="ONNX Runtime execution provider to prefer (e.g. CUDAExecutionProvider). Repeatable.")
@click.option("--model-manifest", "model_manifest", type=click.Path(exists=True, dir_okay=False),
              envvar="PHOTOSENTRY_MODEL_MANIFEST",
              help="Run another ONNX classifier described by this manifest (TOML, see"
                   " photosentry/models/manifests/open_nsfw.toml) instead of open_nsfw.")
@click.option("--second-model", "second_models", multiple=True, type=click.Choice(SECOND_OPINION_NAMES),
              help="Also run NudeNet 320n (pip install 'photosentry[nudenet]'; AGPL-3.0): its labelled boxes"
                   " (e.g. FEMALE_BREAST_EXPOSED) show up in --json.")
@click.option("--fp32", "fp32_only", is_flag=True,
              help="Ignore optimised builds (the default build and `photosentry models optimize`'s); run the"
                   " published model, and start no build.")
@click.pass_context
def scan(
    ctx: click.Context,
    paths: tuple[str, ...],
    as_json: bool,
    policy_path: str | None,
    context: tuple[str, ...],
    threads: int | None,
    providers: tuple[str, ...],
    model_manifest: str | None,
    second_models: tuple[str, ...],
    fp32_only: bool,
) -> None:
    """Scan photos (files or folders, recursively) and print a verdict for each.

    Every file is read by content, whatever its extension. A photo is BLOCKED when it
    matches a bank whose policy action is block, QUARANTINED when it could not be read
    or scanned or a score is over the quarantine threshold, else ALLOWED. Nothing is
    moved or deleted: scan only reports.

    The model runs as the fastest build verified for this host. On a fresh data
    directory there is none yet: the first scan starts one in the background (int8, or
    bf16 where the CPU has it; seconds to minutes, checked against the published model
    on photos shipped with PhotoSentry) and later scans use it. `photosentry models
    build` makes it in the foreground; PHOTOSENTRY_AUTO_BUILD=0 or --fp32 turns it off.

    Exit status: 0 all allowed, 1 some quarantined or blocked, 2 usage error,
    3 set-up error.
    """
    from ..worker.assembly import ScannerSpec, build_scanner
    from ..worker.policy import Policy

    ctx_values = context_pairs(context, policy_path=policy_path)
    try:
        policy = Policy.from_file(policy_path) if policy_path else Policy.default()
    except PhotoSentryError as exc:
        raise SetupError(str(exc)) from exc
    store = open_store(ctx)
    spec = ScannerSpec(data_dir=ctx.obj["data_dir"], threads=threads, providers=providers,
                       classifier=model_manifest or DEFAULT_CLASSIFIER, second_opinions=second_models,
                       use_artifacts=not fp32_only)
    try:
        # No warm-up: a one-off scan would pay for it, and timings are per run, not per photo.
        scanner = build_scanner(spec, store, policy=policy, warm=False,
                                notice=lambda text: click.echo(text, err=True))
    except PhotoSentryError as exc:
        raise SetupError(str(exc)) from exc

    counts: Counter[str] = Counter()
    started = time.perf_counter()
    table = None if as_json else _Table(sys.stdout)
    for path in walk_files(paths):
        verdict = scanner.scan_path(path, context=ctx_values)
        counts[verdict.action.value] += 1
        if table is None:
            click.echo(verdict.to_json())
        else:
            table.row(verdict)
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    if table is not None:
        per = f", {elapsed / total * 1000:.0f} ms/photo" if total else ""
        summary = ", ".join(f"{counts[a]} {a}" for a in ("allow", "quarantine", "block"))
        click.echo(f"\n{total} photo{'s' if total != 1 else ''}: {summary}{per}"
                   f" (policy {policy.version}, bank version {scanner.matcher.version if scanner.matcher else 0},"
                   f" loaded from {scanner.matcher.loaded_from if scanner.matcher else 'nothing'})")
    close_store(store)
    ctx.exit(ExitCode.FLAGGED if counts["quarantine"] or counts["block"] else ExitCode.ALLOWED)


class _Table:
    """The human-readable scan output: one line per photo, reasons spelled out."""

    def __init__(self, out: object) -> None:
        self.out = out
        click.echo(f"{'ACTION':<11}{'REASON':<20}{'DETAIL':<58}FILE")

    def row(self, verdict) -> None:  # type: ignore[no-untyped-def]
        first = verdict.reasons[0]
        detail = first.text
        if first.code.value == "clean" and verdict.scores:
            detail = ", ".join(f"{s.model_id} {s.score:.3f}" for s in verdict.scores)
        codes = ",".join(dict.fromkeys(verdict.reason_codes))
        click.echo(f"{verdict.action.value:<11}{codes[:19]:<20}{detail[:57]:<58}{verdict.subject}")


