"""`photosentry rescan`: decide again about photos already stored, in bulk."""

from __future__ import annotations

import shlex
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .. import defaults
from ..config import data_dir
from .root import ExitCode, SetupError, SourceArgument, cli, connect_redis, context_pairs, split_roots, store_option

INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as shells report it)."""

#: Settings a resumed run takes from its checkpoint; giving another value is an error.
_KEPT = ("mode", "dry_run", "force", "since", "context", "report_format")


@cli.command()
@click.argument("source", type=SourceArgument(prefix=True))
@click.option("--local/--queue", "local", default=True,
              help="--local (default): scan in a process pool on this machine. --queue: enqueue on the bulk"
                   " queue so every worker host shares the work, and follow the bulk verdict stream"
                   f" ({defaults.BULK_VERDICT_STREAM}) until all are done; the uploads stream is left alone.")
@click.option("--processes", "-n", type=click.IntRange(min=1), default=None,
              help="--local: scanner processes. Default: all cores.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="--local: model threads per process.")
@click.option("--batch", "batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="--local: frames per model call; each process takes N photos at a time and runs the model"
                   f" over them together (verdicts are the same as one by one). Default: {defaults.SCAN_BATCH_GPU}"
                   f" when the model runs on a GPU, {defaults.SCAN_BATCH_CPU} on CPU.")
@click.option("--redis-url", envvar=defaults.REDIS_URL_ENV, default=None, metavar="URL",
              help=f"Redis of the queues, the shared bank and the verdict cache. Needed for --queue; with --local"
                   f" it makes the processes use the shared bank and cache. Env: {defaults.REDIS_URL_ENV}.")
@click.option("--source-root", "source_roots", multiple=True, envvar=defaults.SOURCE_ROOTS_ENV,
              callback=split_roots, metavar="DIR|s3://BUCKET/PREFIX/",
              help="Folder or bucket prefix the photos must lie in (repeatable); relative manifest paths start"
                   " at the first folder. --local with a manifest needs one; for a folder or bucket prefix SOURCE"
                   f" it defaults to that SOURCE. Env: {defaults.SOURCE_ROOTS_ENV}.")
@store_option
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Report file, one row per photo. Default: rescan-<date>-<time>.jsonl here. Its checkpoint"
                   " is <report>.checkpoint.json.")
@click.option("--format", "report_format", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Report format. Default: csv for a .csv report, else jsonl.")
@click.option("--resume", is_flag=True,
              help="Continue the run whose report is --report: nothing reported is scanned again, nothing is"
                   " lost.")
@click.option("--dry-run", is_flag=True, help="Decide and report, but move nothing.")
@click.option("--force", is_flag=True,
              help="Scan every photo, even one whose bytes were decided under the same bank and policy"
                   " versions (the verdict cache).")
@click.option("--since", "since_text", default=None, metavar="DATE",
              help="Only photos modified (or, in a JSON manifest, with a timestamp) at or after DATE:"
                   " 2026-11-01 or 2026-11-01T12:00:00Z (UTC unless the date says otherwise).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
              help="Start at most N photos per second. Default: as fast as the processes or workers go.")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE",
              help="Context for every photo, e.g. --context recipient_is_minor=true; a JSON manifest line's own"
                   " context wins. Repeatable.")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False), envvar="PHOTOSENTRY_POLICY",
              help="--local: policy TOML file. Default: the shipped policy. (--queue uses the workers' policy.)")
@click.option("--outstanding", type=click.IntRange(min=1), default=defaults.RESCAN_QUEUE_CAPACITY,
              show_default=True, help="--queue: most jobs on the bulk queue at once for this rescan.")
@click.option("--progress/--no-progress", default=None,
              help="Show the progress bar. Default: only when stderr is a terminal.")
@click.pass_context
def rescan(ctx: click.Context, source: str, local: bool, processes: int | None, threads: int, batch: int | None,
           redis_url: str | None, source_roots: tuple[str, ...], store: str | None, report_path: str | None,
           report_format: str | None, resume: bool, dry_run: bool, force: bool, since_text: str | None,
           rate: float | None, context: tuple[str, ...], policy_path: str | None, outstanding: int,
           progress: bool | None) -> None:
    """Scan stored photos again: a folder tree, a bucket prefix (s3://bucket/prefix/), or
    a manifest of paths and s3:// URLs (or JSON Lines).

    Use it when the policy changes, the model improves or a new list of banned hashes
    arrives. Each photo gets a row in the report (JSON Lines or CSV) with its verdict;
    quarantined and blocked photos are moved into the stores as a worker would
    (not with --dry-run). A photo whose bytes were already decided under the same bank
    and policy versions is taken from the verdict cache unless --force. Missing files
    and unusable manifest lines get rows too; they never stop the run.

    A manifest line is a path (relative to the first --source-root, or absolute), an
    s3://bucket/key URL, or a JSON object: {"path": "...", "upload_id": "u-1",
    "context": {...}, "timestamp": "..."}. A bucket prefix is listed page by page in
    key order (AWS credentials and AWS_ENDPOINT_URL from the environment).

    \b
    Examples:
      photosentry rescan /srv/photos --report nov.jsonl                 # this machine, all cores
      photosentry rescan /srv/photos --dry-run --since 2026-11-01 --report try.csv
      photosentry rescan s3://uploads/incoming/ --store s3://photosentry-private/ --report nov.jsonl
      photosentry rescan uploads.jsonl --source-root /srv/photos --queue --rate 500 --report nov.jsonl
      photosentry rescan uploads.jsonl --report nov.jsonl --resume      # after Ctrl-C or a crash
      photosentry rescan /srv/photos -n 1 --batch 32 --report nov.jsonl  # a GPU host: one process, big batches

    Ctrl-C stops cleanly and prints the command that resumes; a killed run resumes
    the same way. Exit status: 0 all allowed, 1 some not allowed (quarantine, block,
    missing, invalid), 2 usage error, 3 set-up error, 130 interrupted.
    See docs/rescan.md.
    """
    from ..rescan.checkpoint import Checkpoint, checkpoint_path, read_resume_state
    from ..rescan.report import ReportWriter, format_for
    from ..rescan.runner import Driver
    from ..errors import StorageUnavailable
    from ..rescan.source import FOLDER, S3, open_source, parse_time

    try:
        src = open_source(source)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SOURCE") from exc
    except ImportError as exc:  # an s3:// SOURCE without boto3
        raise SetupError(str(exc)) from exc
    if report_path is None:
        if resume:
            raise click.UsageError("--resume needs the --report of the run to continue")
        report_path = f"rescan-{datetime.now().strftime('%Y%m%d-%H%M%S')}.jsonl"
    report = Path(report_path)
    cp_file = checkpoint_path(report)

    wanted: dict[str, Any] = {
        "mode": "local" if local else "queue",
        "dry_run": dry_run,
        "force": force,
        "since": _since(since_text, parse_time),
        "context": context_pairs(context, policy_path=policy_path),
        "report_format": format_for(report, report_format),
    }
    resume_state = None
    if resume:
        if not cp_file.exists():
            raise click.UsageError(f"no checkpoint {cp_file} next to the report: nothing to resume")
        try:
            checkpoint = Checkpoint.load(cp_file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        _check_same_run(ctx, checkpoint, src, wanted)
        if checkpoint.complete:
            click.echo(f"{report}: this rescan is already complete ({checkpoint.rows} rows); nothing to do")
            ctx.exit(ExitCode.ALLOWED)
        roots = tuple(source_roots) or tuple(checkpoint.source_roots)
        resume_state = read_resume_state(report, checkpoint, src.key_of)
        if src.kind == S3:
            src.start_after = resume_state.watermark  # type: ignore[union-attr]  # list from there, not from the start
        if resume_state.cut_bytes:
            click.echo(f"cut a half-written last row ({resume_state.cut_bytes} bytes) from {report}", err=True)
    else:
        if (report.exists() and report.stat().st_size > 0) or cp_file.exists():
            raise click.UsageError(f"{report} already exists: add --resume to continue that run, or choose"
                                   " another --report")
        roots = tuple(source_roots)
        if not roots and src.kind in (FOLDER, S3):
            roots = (src.name,)
        checkpoint = Checkpoint(run_id=uuid.uuid4().hex[:12], source=src.fingerprint(),
                                source_roots=list(roots), **wanted)
    if checkpoint.mode == "local" and not roots:
        raise click.UsageError("--local with a manifest needs --source-root (the folder its paths lie in)")
    report.parent.mkdir(parents=True, exist_ok=True)

    backend = _backend(ctx, checkpoint, roots=roots, processes=processes, threads=threads, batch=batch,
                       redis_url=redis_url, store=store,
                       policy_path=policy_path, outstanding=outstanding, folder=src.kind in (FOLDER, S3))
    try:
        backend.start()  # models loaded (or Redis reached) before any file is written
    except KeyboardInterrupt:
        backend.close(cancel=True)
        click.echo("\ninterrupted while starting; nothing was scanned", err=True)
        sys.exit(INTERRUPTED)
    except Exception as exc:
        backend.close(cancel=True)
        raise SetupError(f"the rescan could not start: {type(exc).__name__}: {exc}") from exc
    writer = ReportWriter(report, checkpoint.report_format)
    try:
        checkpoint.save(cp_file)
        settled = 0
        if resume_state is not None and resume_state.unsettled and checkpoint.mode == "local" \
                and not checkpoint.dry_run:
            from ..rescan.runner import upload_id_for
            from ..rescan.source import Item

            for row in resume_state.unsettled:
                item = Item(src.key_of(row["key"]), str(row["source"]), upload_id=row.get("upload_id") or None)
                settled += bool(backend.settle(row, upload_id_for(checkpoint.run_id, item)))  # type: ignore[attr-defined]
        driver = Driver(source=src, backend=backend, writer=writer, checkpoint=checkpoint, checkpoint_file=cp_file,
                        resume=resume_state, since=checkpoint.since, stat_roots=roots, rate=rate, progress=progress)
        driver.summary.settled = settled
        outcome = driver.run()
    except StorageUnavailable as exc:
        again = ["photosentry", "rescan", source, "--report", str(report), "--resume"]
        raise SetupError(f"{exc}; the checkpoint is saved, resume with:\n  {shlex.join(again)}") from exc
    finally:
        writer.close()

    click.echo(outcome.summary.render())
    click.echo(f"report: {report}  (checkpoint {cp_file})")
    if outcome.interrupted:
        again = ["photosentry", "rescan", source, "--report", str(report), "--resume"]
        click.echo(f"\ninterrupted: {outcome.summary.rows} rows written this time; nothing is lost."
                   f" Resume with:\n  {shlex.join(again)}", err=True)
        sys.exit(INTERRUPTED)
    ctx.exit(ExitCode.FLAGGED if outcome.summary.flagged else ExitCode.ALLOWED)


def _since(text: str | None, parse: Any) -> float | None:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc


def _check_same_run(ctx: click.Context, checkpoint: Any, src: Any, wanted: dict[str, Any]) -> None:
    """A resume continues the checkpoint's run: refuse another source or other settings."""
    fingerprint = src.fingerprint()
    if fingerprint.get("path") != checkpoint.source.get("path"):
        raise click.UsageError(f"the report belongs to a rescan of {checkpoint.source.get('path')},"
                               f" not {fingerprint.get('path')}")
    if fingerprint != checkpoint.source:
        raise click.UsageError(f"the manifest {fingerprint['path']} changed since the run started (size or"
                               " modification time): resuming would skip or repeat lines. Start a new report.")
    params = {"mode": "local", "dry_run": "dry_run", "force": "force", "since": "since_text",
              "context": "context", "report_format": "report_format"}
    for name in _KEPT:
        source = ctx.get_parameter_source(params[name])
        if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        if wanted[name] != getattr(checkpoint, name):
            raise click.UsageError(f"--resume continues the run as it was started ({name} ="
                                   f" {getattr(checkpoint, name)!r}); leave that option out or start a new"
                                   " report")


def _backend(ctx: click.Context, checkpoint: Any, *, roots: tuple[str, ...], processes: int | None, threads: int,
             batch: int | None, redis_url: str | None, store: str | None, policy_path: str | None, outstanding: int,
             folder: bool) -> Any:
    if checkpoint.mode == "queue":
        from ..rescan.remote import QueueBackend

        if not redis_url:
            raise click.UsageError(f"--queue needs --redis-url (or {defaults.REDIS_URL_ENV})")
        client = connect_redis(redis_url)
        return QueueBackend(client, run_id=checkpoint.run_id, dry_run=checkpoint.dry_run, force=checkpoint.force,
                            default_context=dict(checkpoint.context), source_roots=() if folder else roots,
                            capacity=outstanding)
    from ..errors import PhotoSentryError
    from ..rescan.local import LocalBackend, LocalSettings, default_processes
    from ..worker.stores import check_apart

    if not checkpoint.dry_run:
        # --local moves photos itself: a store or data directory inside the rescanned
        # folder would be rescanned, and its photos "moved" out of it (deleted).
        try:
            check_apart(store, data_dir(ctx.obj["data_dir"]), roots)
        except ValueError as exc:
            raise SetupError(str(exc)) from exc

    if policy_path:
        from ..worker.policy import Policy

        try:
            Policy.from_file(policy_path)
        except PhotoSentryError as exc:
            raise SetupError(str(exc)) from exc
    settings = LocalSettings(source_roots=roots, data_dir=ctx.obj["data_dir"], store=store, policy_path=policy_path,
                             redis_url=redis_url, threads=threads, use_cache=not checkpoint.force, batch_size=batch)
    return LocalBackend(settings, processes=processes or default_processes(), run_id=checkpoint.run_id,
                        dry_run=checkpoint.dry_run, default_context=dict(checkpoint.context))
