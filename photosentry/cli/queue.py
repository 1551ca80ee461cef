"""`photosentry worker` and `photosentry enqueue`: the RQ side of the command line."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from .. import defaults
from .root import (
    ExitCode,
    SetupError,
    cli,
    context_pairs,
    log_format_option,
    redis_url_option,
    split_roots,
    SourceArgument,
    store_option,
)

# -- queue: worker and enqueue ------------------------------------------------------------


@cli.command()
@redis_url_option
@click.option("--processes", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this host. Each loads the model and the bank index once and keeps them warm.")
@click.option("--source-root", "source_roots", multiple=True, envvar=defaults.SOURCE_ROOTS_ENV,
              callback=split_roots, metavar="DIR|s3://BUCKET/PREFIX/",
              help=f"Folder that path jobs may read from, or bucket prefix that s3:// jobs may read from;"
                   f" repeatable, mixable. Anything outside is refused and quarantined. Env:"
                   f" {defaults.SOURCE_ROOTS_ENV} (separated by '{os.pathsep}').")
@store_option
@click.option("--queue", "queues", multiple=True, type=click.Choice(list(defaults.QUEUES)),
              help="Queues to take jobs from, highest priority first. Default: uploads, then bulk.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty (batch runs, tests).")
@click.option("--job-timeout", type=click.IntRange(min=1), default=defaults.JOB_TIMEOUT_S, show_default=True,
              help="Most seconds any one job may run; a job asking for more gets this.")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False), envvar="PHOTOSENTRY_POLICY",
              help="Policy TOML file. Default: the shipped policy.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Model threads per process. Default: all cores (use 1 with --processes = cores).")
@click.option("--provider", "providers", multiple=True,
              help="ONNX Runtime execution provider to prefer (e.g. CUDAExecutionProvider). Repeatable.")
@click.option("--callback-key-file", type=click.Path(exists=True, dir_okay=False),
              help=f"File holding the key that signs HTTP callbacks (16+ bytes). Env: {defaults.CALLBACK_KEY_ENV}"
                   " (the key itself).")
@click.option("--callback-allow", "callback_allow", multiple=True, metavar="PREFIX",
              help="Only call back URLs under PREFIX, e.g. https://app.example/hooks/ (same scheme, host and port,"
                   " path below it; repeatable). Default: any http(s) host that is not internal.")
@click.option("--callback-allow-network", "callback_networks", multiple=True, metavar="CIDR",
              envvar=defaults.CALLBACK_NETWORKS_ENV, callback=lambda ctx, param, v: tuple(
                  n.strip() for item in v for n in item.split(",") if n.strip()),
              help="Let callbacks reach this internal network (loopback, link-local, metadata addresses are"
                   " refused by default), e.g. 127.0.0.0/8 for a receiver on this host. Repeatable."
                   f" Env: {defaults.CALLBACK_NETWORKS_ENV} (comma-separated).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), envvar=defaults.METRICS_PORT_ENV, default=None,
              help="Serve Prometheus metrics on this port (/metrics). Default: off.")
@click.option("--metrics-host", default=defaults.METRICS_HOST, show_default=True, envvar=defaults.METRICS_HOST_ENV,
              help="Address the metrics listener binds. In a container scraped from outside use 0.0.0.0 (or"
                   f" the pod address). Env: {defaults.METRICS_HOST_ENV}.")
@log_format_option
@click.option("--no-cache", is_flag=True,
              help="Scan every upload even if the same bytes were decided under the same banks and policy"
                   " (benchmarks, audits). Default: duplicates cost one Redis lookup.")
@click.pass_context
def worker(ctx: click.Context, redis_url: str, processes: int, source_roots: tuple[str, ...], store: str | None,
           queues: tuple[str, ...],
           burst: bool, job_timeout: int, policy_path: str | None, threads: int | None, providers: tuple[str, ...],
           callback_key_file: str | None, callback_allow: tuple[str, ...], callback_networks: tuple[str, ...],
           metrics_port: int | None, metrics_host: str, log_format: str, no_cache: bool) -> None:
    """Scan queued uploads: take jobs from Redis, record and deliver verdicts.

    Each verdict becomes the job's result, one entry on a Redis stream
    (photosentry:verdicts for the uploads queue, photosentry:verdicts:bulk for the
    bulk queue: rescans never crowd out upload verdicts), and, when the job has a
    callback_url, a signed POST.
    Quarantined and blocked photos are moved into the quarantine/ and blocked/
    stores under the data directory (or --store: a folder or a private bucket
    prefix). A job that keeps failing ends quarantined with reason scan_failed:
    nothing is ever allowed unscanned.

    \b
    Examples:
      photosentry worker --redis-url redis://queue:6379/0 --source-root /srv/uploads -n 4 --threads 1
      photosentry worker --source-root s3://uploads/incoming/ --store s3://photosentry-private/
      photosentry worker --burst            # drain the queues once, then exit

    S3 uses the standard AWS credentials (environment, ~/.aws, instance or pod role)
    and AWS_ENDPOINT_URL for an S3-compatible server; see docs/storage.md.

    SIGTERM finishes the current jobs, then exits; a second SIGTERM puts them back
    on the queue and exits at once. Queues are standard RQ: `rq info --url URL`
    shows them. Job layout and metrics: docs/queue.md.
    """
    from ..errors import PolicyError
    from ..worker import logs
    from ..worker.supervisor import run_pool
    from ..worker.service import ServiceSettings

    logs.configure(logging.DEBUG if ctx.find_root().params.get("verbose") else logging.INFO,
                   json_format=log_format == "json")
    key = os.environ.get(defaults.CALLBACK_KEY_ENV) or None
    if callback_key_file:
        key = Path(callback_key_file).read_text("utf-8").strip()
    if key is not None and len(key.encode()) < 16:
        raise click.BadParameter("the callback key must be at least 16 bytes", param_hint="--callback-key-file")
    if policy_path:
        try:
            from ..worker.policy import Policy

            Policy.from_file(policy_path)
        except PolicyError as exc:
            raise SetupError(str(exc)) from exc
    settings = ServiceSettings(
        redis_url=redis_url, source_roots=source_roots, data_dir=ctx.obj["data_dir"], store=store,
        policy_path=policy_path,
        threads=threads, providers=providers, callback_key=key, callback_allow=callback_allow,
        callback_networks=callback_networks, use_cache=not no_cache,
    )
    _check_storage(source_roots, store, ctx.obj["data_dir"])
    try:
        from ..worker.delivery import CallbackPolicy

        CallbackPolicy(allow_prefixes=callback_allow, allow_networks=callback_networks)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--callback-allow / --callback-allow-network") from exc
    try:
        status = run_pool(settings, processes=processes, burst=burst, queues=queues or defaults.QUEUES,
                          max_job_timeout=job_timeout, metrics_port=metrics_port, metrics_host=metrics_host,
                          log_json=log_format == "json",
                          verbose=bool(ctx.find_root().params.get("verbose")))
    except Exception as exc:  # redis down, port taken ...
        import redis as _redis

        if isinstance(exc, (_redis.RedisError, OSError)):
            raise SetupError(f"cannot start workers: {exc}") from exc
        raise
    if status == ExitCode.SETUP:
        raise SetupError("a worker process could not load its model, policy or bank (see the log above)")
    ctx.exit(status)


@cli.command()
@redis_url_option
@click.argument("paths", nargs=-1, required=True, type=SourceArgument())
@click.option("--inline", is_flag=True,
              help=f"Send each photo's bytes in the job (up to {defaults.MAX_INLINE_BYTES // 2**20} MB) instead of"
                   " its path; for workers that cannot see this file system.")
@click.option("--as-given", is_flag=True,
              help="Send PATHS exactly as typed (relative paths are then taken from the worker's first source"
                   " root). Default: absolute paths.")
@click.option("--upload-id", default=None, help="Upload id (only with one PATH). Default: a new random id per photo.")
@click.option("--version-id", default=None, metavar="VERSION",
              help="The version of the object this upload wrote, in a versioned bucket (only with one s3:// PATH):"
                   " the workers read and act on that version only. Give it whenever it is known.")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE",
              help="Upload context for the policy, e.g. --context recipient_is_minor=true. Repeatable.")
@click.option("--callback-url", default=None, help="URL the worker POSTs the signed verdict to.")
@click.option("--queue", type=click.Choice(list(defaults.QUEUES)), default=defaults.UPLOADS_QUEUE, show_default=True,
              help="uploads (high priority; verdicts on photosentry:verdicts) or bulk (rescans; verdicts on"
                   f" {defaults.BULK_VERDICT_STREAM}).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Wait up to SECONDS for the verdicts and print them; exit 1 if any is not allow.")
def enqueue(redis_url: str, paths: tuple[str, ...], inline: bool, as_given: bool, upload_id: str | None,
            version_id: str | None, context: tuple[str, ...], callback_url: str | None, queue: str,
            wait_s: float | None) -> None:
    """Queue photos (PATHS: files, or s3://bucket/key objects) for the workers; prints one
    line per job: JOB_ID UPLOAD_ID PATH.

    An s3:// object is sent as its URL; the workers read it (it must lie under one of
    their s3:// source roots). In a versioned bucket, --version-id names the version
    the upload wrote, so a later upload under the same key is not taken for it.

    \b
    Examples:
      photosentry enqueue /srv/uploads/2026/11/u-8812.jpg
      photosentry enqueue s3://uploads/incoming/2026/11/u-8812.jpg --wait 30
      photosentry enqueue s3://uploads/avatars/u-42.jpg --version-id 3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY
      photosentry enqueue --inline --wait 30 suspicious.jpg
    """
    import uuid

    import redis as _redis

    from ..enqueue import enqueue_scan
    from ..s3.location import is_s3_url

    if upload_id is not None and len(paths) != 1:
        raise click.UsageError("--upload-id needs exactly one PATH")
    if version_id is not None and (len(paths) != 1 or not is_s3_url(paths[0])):
        raise click.UsageError("--version-id needs exactly one s3:// PATH")
    ctx_values = context_pairs(context)
    client = _redis.Redis.from_url(redis_url)
    jobs: list[tuple[str, str, str]] = []
    try:
        for raw in paths:
            uid = upload_id or f"cli-{uuid.uuid4().hex[:16]}"
            source: str | bytes
            if is_s3_url(raw):
                if inline:
                    raise click.UsageError(f"{raw}: --inline sends a file's bytes; an s3:// object is sent as its URL")
                source = raw
            elif inline:
                source = Path(raw).read_bytes()
            else:
                source = raw if as_given else os.path.abspath(raw)
            try:
                job_id = enqueue_scan(client, source=source, upload_id=uid, context=ctx_values,
                                      callback_url=callback_url, queue=queue, version_id=version_id)
            except ValueError as exc:
                raise click.BadParameter(f"{raw}: {exc}", param_hint="PATHS") from exc
            jobs.append((job_id, uid, raw))
            click.echo(f"{job_id} {uid} {raw}")
        if wait_s is None:
            return
        flagged = _wait_for_verdicts(client, jobs, wait_s, queue)
    except _redis.RedisError as exc:
        raise SetupError(f"cannot reach Redis: {exc}") from exc
    finally:
        client.close()
    sys.exit(ExitCode.FLAGGED if flagged else ExitCode.ALLOWED)


def _check_storage(source_roots: tuple[str, ...], store: str | None, data_dir_: str | None = None) -> None:
    """Refuse at start what every job would fail on, or what would let a job delete what the
    stores keep: a store (or the data directory) inside a source root or holding one, or
    s3:// settings without boto3."""
    from ..config import data_dir
    from ..s3.location import S3Prefix, is_s3_url
    from ..worker.stores import check_apart

    try:
        check_apart(store, data_dir(data_dir_), source_roots)
    except ValueError as exc:
        raise SetupError(str(exc)) from exc

    s3_roots = [S3Prefix.parse(r) for r in source_roots if is_s3_url(r)]
    if store and is_s3_url(store):
        root = S3Prefix.parse(store)
        for source in s3_roots:
            if root.overlaps(source):
                raise SetupError(f"the store {root} overlaps the source root {source}: a job could name a"
                                 " quarantined photo as its source")
    if s3_roots or (store and is_s3_url(store)):
        try:
            import boto3  # noqa: F401
        except ImportError as exc:
            raise SetupError("s3:// sources and stores need boto3: pip install 'photosentry[s3]'") from exc


def _wait_for_verdicts(client, jobs: list[tuple[str, str, str]], wait_s: float,  # type: ignore[no-untyped-def]
                       queue: str) -> bool:
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    from ..worker.stream import VerdictStream, stream_for_queue

    deadline = time.monotonic() + wait_s
    pending = {job_id: (uid, raw) for job_id, uid, raw in jobs}
    stream = VerdictStream(client, stream=stream_for_queue(queue))  # where workers record this queue's jobs
    flagged = False
    while pending and time.monotonic() < deadline:
        for job_id, (uid, raw) in list(pending.items()):
            job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
            status = job.get_status()
            if status == JobStatus.FINISHED:
                verdict = job.return_value() or {}
            elif status == JobStatus.FAILED and stream.recorded(uid):
                verdict = {"action": "quarantine", "reasons": [{"code": "scan_failed"}]}
            else:
                continue
            del pending[job_id]
            codes = ",".join(r.get("code", "") for r in verdict.get("reasons", []))
            flagged |= verdict.get("action") != "allow"
            click.echo(f"{verdict.get('action', '?'):<11}{codes[:19]:<20}{raw}")
        time.sleep(0.1)
    for _uid, raw in pending.values():
        flagged = True
        click.echo(f"{'pending':<11}{'':<20}{raw}")
    return flagged


