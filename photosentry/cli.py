"""The ``photosentry`` command: scan photos and manage banned hashes.

Exit status of ``photosentry scan`` (documented in the README):
    0  every photo was allowed
    1  at least one photo was quarantined or blocked
    2  usage error (bad option, missing path)
    3  set-up error (model, policy or bank could not be loaded)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from enum import IntEnum
from pathlib import Path

import click

from . import defaults
from .config import data_dir, ensure_private_dir
from .decode import Limits, decode, read_limited
from .errors import InvalidHash, ModelUnavailable, PhotoSentryError, UnreadableImage
from .hashes.banks import BankEntry, BankStore, EntrySource, NewEntry, SqliteBankStore
from .hashes.codecs import Algorithm, parse_tagged
from .hashes.matcher import BankMatcher
from .hashes.signals import PdqSignal, hash_image


class ExitCode(IntEnum):
    ALLOWED = 0
    FLAGGED = 1
    USAGE = 2
    SETUP = 3


class SetupError(click.ClickException):
    """Something the command needs could not be loaded; exits with ExitCode.SETUP."""

    exit_code = ExitCode.SETUP


def _store(ctx: click.Context) -> BankStore:
    redis_url = ctx.obj.get("bank_redis_url")
    if redis_url:
        import redis as _redis

        from .hashes.redis_banks import RedisBankStore

        client = _redis.Redis.from_url(redis_url)
        try:
            client.ping()
        except _redis.RedisError as exc:
            from .config import redact_url

            raise SetupError(f"cannot reach the Redis bank at {redact_url(redis_url)}: {exc}") from exc
        return RedisBankStore(client)
    home = ensure_private_dir(data_dir(ctx.obj["data_dir"]))
    try:
        return SqliteBankStore(home / defaults.BANK_DB_FILENAME)
    except Exception as exc:  # sqlite3 raises several types for a bad file
        raise SetupError(f"cannot open the bank database in {home}: {exc}") from exc


def _close(store: BankStore) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    envvar=defaults.DATA_DIR_ENV,
    type=click.Path(file_okay=False),
    help="Where the bank database lives. Default: $PHOTOSENTRY_HOME, else ~/.local/share/photosentry.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what is loaded (model provider, bank size).")
@click.version_option(package_name="photosentry")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, verbose: bool) -> None:
    """PhotoSentry: check photos against banned-hash banks and a nudity model.

    \b
    Start here:
      photosentry scan ~/uploads            scan a folder, print a verdict per photo
      photosentry ban add photo.jpg --by alice --reason "reported 1234"
      photosentry ban list                  see what is banned
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir


# -- scan -------------------------------------------------------------------------


def _context_pairs(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--context")
        out[key.strip()] = value.strip()
    return out


def _walk(paths: Sequence[str]) -> Iterator[Path]:
    """Files under ``paths`` in a stable order; extensions are ignored on purpose."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


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
@click.pass_context
def scan(
    ctx: click.Context,
    paths: tuple[str, ...],
    as_json: bool,
    policy_path: str | None,
    context: tuple[str, ...],
    threads: int | None,
    providers: tuple[str, ...],
) -> None:
    """Scan photos (files or folders, recursively) and print a verdict for each.

    Every file is read by content, whatever its extension. A photo is BLOCKED when it
    matches a bank whose policy action is block, QUARANTINED when it could not be read
    or scanned or a score is over the quarantine threshold, else ALLOWED. Nothing is
    moved or deleted: scan only reports.

    Exit status: 0 all allowed, 1 some quarantined or blocked, 2 usage error,
    3 set-up error.
    """
    from .models.open_nsfw import OpenNsfwClassifier
    from .worker.pipeline import Scanner
    from .worker.policy import Policy

    ctx_values = _context_pairs(context)
    try:
        policy = Policy.from_file(policy_path) if policy_path else Policy.default()
    except PhotoSentryError as exc:
        raise SetupError(str(exc)) from exc
    store = _store(ctx)
    try:
        classifier = OpenNsfwClassifier(threads=threads, providers=list(providers) or None)
        scanner = Scanner(policy=policy, matcher=BankMatcher(store), classifier=classifier)
    except PhotoSentryError as exc:
        raise SetupError(str(exc)) from exc

    counts: Counter[str] = Counter()
    started = time.perf_counter()
    table = None if as_json else _Table(sys.stdout)
    for path in _walk(paths):
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
                   f" (policy {policy.version}, bank version {scanner.matcher.version if scanner.matcher else 0})")
    _close(store)
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


# -- ban ----------------------------------------------------------------------------


def _who_why(f):  # type: ignore[no-untyped-def]
    f = click.option("--reason", required=True, help="Why (ticket, report id): kept in the audit trail.")(f)
    f = click.option("--by", "actor", required=True, help="Who is making this change: kept in the audit trail.")(f)
    return f


@cli.group()
@click.option("--redis-url", envvar=defaults.REDIS_URL_ENV, default=None, metavar="URL",
              help="Change the shared bank in this Redis (the one `photosentry worker` uses; running workers"
                   f" pick changes up within a second). Env: {defaults.REDIS_URL_ENV}. Default: the local"
                   " SQLite bank.")
@click.pass_context
def ban(ctx: click.Context, redis_url: str | None) -> None:
    """Add, list and remove banned hashes.

    Only hashes are stored, never the photo. A ban from an image stores its SHA-256,
    MD5, PDQ, pHash and dHash, so re-encoded, resized, cropped-a-little or mirrored
    copies are caught too. Every change records who made it and why.
    """
    ctx.obj["bank_redis_url"] = redis_url


@ban.command("add")
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--hash", "hashes", multiple=True, metavar="ALGO:VALUE",
              help="A hash to ban, e.g. pdq:<64 hex digits>, phash:<16 hex>, sha256:<64 hex>. Repeatable.")
@click.option("--bank", default=defaults.DEFAULT_BANK, show_default=True, help="Bank to add to.")
@click.option("--label", default="", help="Short label shown with matches, e.g. 'known abuse series 12'.")
@_who_why
@click.pass_context
def ban_add(
    ctx: click.Context, images: tuple[str, ...], hashes: tuple[str, ...], bank: str, label: str, actor: str, reason: str
) -> None:
    """Ban photos (IMAGES) or hashes (--hash) so matching uploads are stopped.

    \b
    Examples:
      photosentry ban add reported.jpg --by alice --reason "ticket 881"
      photosentry ban add --hash pdq:f8f8...  --bank csam --by importer --reason "list 2026-11"
    """
    if not images and not hashes:
        raise click.UsageError("give at least one IMAGE or --hash ALGO:VALUE")
    new: list[NewEntry] = []
    try:
        for text in hashes:
            algorithm, value = parse_tagged(text)
            new.append(NewEntry(algorithm, value, bank, label, EntrySource.MODERATOR))
    except (InvalidHash, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--hash") from exc
    for image in images:
        new.extend(_entries_from_image(Path(image), bank, label))
    store = _store(ctx)
    try:
        added = store.add(new, actor=actor, reason=reason)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for entry in added:
        click.echo(f"{entry.id:>6}  {entry.bank:<12} {entry.tagged}")
    click.echo(f"bank version {store.version()}")
    _close(store)


def _entries_from_image(path: Path, bank: str, label: str) -> list[NewEntry]:
    limits = Limits()
    try:
        data = read_limited(path, limits.max_bytes)
        decoded = decode(data, limits)
    except UnreadableImage as exc:
        raise click.BadParameter(f"{path}: {exc.code}: {exc.message}", param_hint="IMAGES") from exc
    hashes = hash_image(data, decoded.frames, decoded.frame_indices)
    label = label or path.name
    group = hashes.sha256
    entries = [
        NewEntry(Algorithm.SHA256, hashes.sha256, bank, label, EntrySource.IMAGE, group),
        NewEntry(Algorithm.MD5, hashes.md5, bank, label, EntrySource.IMAGE, group),
    ]
    for frame in hashes.frames:
        for ph in frame.hashes:
            if ph.algorithm is Algorithm.PDQ and (ph.quality or 0) < PdqSignal.QUALITY_THRESHOLD:
                click.echo(
                    f"warning: {path.name} frame {frame.frame}: PDQ quality {ph.quality} is below"
                    f" {PdqSignal.QUALITY_THRESHOLD}; its PDQ hash will not match on its own", err=True)
            try:
                entries.append(NewEntry(ph.algorithm, ph.value, bank, label, EntrySource.IMAGE, group))
            except InvalidHash as exc:  # e.g. a blank frame's all-zero hash
                click.echo(f"warning: {path.name}: skipped {ph.algorithm.value}: {exc}", err=True)
    return entries


@ban.command("list")
@click.option("--bank", default=None, help="Only this bank.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed entries (shown with who removed them).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.pass_context
def ban_list(ctx: click.Context, bank: str | None, include_removed: bool, as_json: bool) -> None:
    """List banned hashes, oldest first."""
    store = _store(ctx)
    if not as_json:
        click.echo(f"{'ID':>6}  {'BANK':<12} {'STATE':<8} {'ADDED BY':<12} {'LABEL':<24} HASH")
    for entry in store.entries(bank=bank, include_removed=include_removed):
        if as_json:
            click.echo(json.dumps(entry.to_dict()))
        else:
            state = "active" if entry.active else "removed"
            click.echo(f"{entry.id:>6}  {entry.bank:<12} {state:<8} {entry.added_by[:11]:<12} {entry.label[:23]:<24} {entry.tagged}")
    _close(store)


@ban.command("remove")
@click.argument("entry_ids", nargs=-1, type=int)
@click.option("--group", "groups", multiple=True, metavar="SHA256",
              help="Remove every hash that was added from one image (its SHA-256, shown by `ban list --json`).")
@_who_why
@click.pass_context
def ban_remove(ctx: click.Context, entry_ids: tuple[int, ...], groups: tuple[str, ...], actor: str, reason: str) -> None:
    """Remove banned hashes by ENTRY_IDS (from `ban list`). The entry is kept, marked removed, for audit."""
    if not entry_ids and not groups:
        raise click.UsageError("give at least one ENTRY_ID or --group SHA256")
    store = _store(ctx)
    ids = list(entry_ids)
    for group in groups:
        found = [e.id for e in store.entries(group=group.lower())]
        if not found:
            raise click.BadParameter(f"no active entries in group {group!r}", param_hint="--group")
        ids.extend(found)
    try:
        removed: list[BankEntry] = store.remove(ids, actor=actor, reason=reason)
    except PhotoSentryError as exc:
        raise click.BadParameter(str(exc), param_hint="ENTRY_IDS") from exc
    for entry in removed:
        click.echo(f"{entry.id:>6}  removed  {entry.bank:<12} {entry.tagged}")
    click.echo(f"bank version {store.version()}")
    _close(store)


@ban.command("configure")
@click.argument("bank")
@click.option("--pdq", type=click.IntRange(0, 127), default=None, help=f"PDQ match distance (default {defaults.PDQ_MATCH_DISTANCE}).")
@click.option("--phash", type=click.IntRange(0, 31), default=None, help=f"pHash match distance (default {defaults.PHASH_MATCH_DISTANCE}).")
@click.option("--dhash", type=click.IntRange(0, 31), default=None, help=f"dHash match distance (default {defaults.DHASH_MATCH_DISTANCE}).")
@click.option("--description", default=None, help="What this bank holds (kept if not given).")
@_who_why
@click.pass_context
def ban_configure(ctx: click.Context, bank: str, pdq: int | None, phash: int | None, dhash: int | None,
                  description: str | None, actor: str, reason: str) -> None:
    """Set how close a perceptual hash must be to match in BANK.

    Lower is stricter (fewer false matches, more missed copies). Only the distances
    (and description) you give change; the others keep their current value, or the
    default if never set. See docs/matching.md for how the defaults were chosen.
    """
    given = {a: d for a, d in ((Algorithm.PDQ, pdq), (Algorithm.PHASH, phash), (Algorithm.DHASH, dhash)) if d is not None}
    store = _store(ctx)
    current = store.bank(bank)
    try:
        cfg = store.configure_bank(
            bank,
            distances={**current.distances, **given},
            description=current.description if description is None else description,
            actor=actor,
            reason=reason,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{cfg.name}: " + ", ".join(f"{a.value} <= {cfg.distance(a)}" for a in Algorithm if a.is_perceptual))
    _close(store)


# -- queue: worker and enqueue ------------------------------------------------------------


def _redis_url_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--redis-url", envvar=defaults.REDIS_URL_ENV, required=True, metavar="URL",
        help="Redis holding the queues, the shared bank and the verdict stream, e.g. redis://host:6379/0."
             f" Env: {defaults.REDIS_URL_ENV}. Passwords are never logged.",
    )(f)


def _split_roots(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    roots: list[str] = []
    for item in value:
        roots.extend(p for p in item.split(os.pathsep) if p)
    for root in roots:
        if not os.path.isdir(root):
            raise click.BadParameter(f"{root!r} is not a directory", param_hint="--source-root")
    return tuple(roots)


@cli.command()
@_redis_url_option
@click.option("--processes", "-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this host. Each loads the model and the bank index once and keeps them warm.")
@click.option("--source-root", "source_roots", multiple=True, envvar=defaults.SOURCE_ROOTS_ENV,
              callback=_split_roots, metavar="DIR",
              help=f"Folder that path jobs may read from; repeatable. Anything resolving outside is refused"
                   f" and quarantined. Env: {defaults.SOURCE_ROOTS_ENV} (separated by '{os.pathsep}').")
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
              help="Only call back URLs starting with PREFIX (repeatable). Default: any http(s) URL.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), envvar=defaults.METRICS_PORT_ENV, default=None,
              help="Serve Prometheus metrics on this port (/metrics). Default: off.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="Log lines as JSON objects (with upload_id and job_id) or plain text.")
@click.option("--no-cache", is_flag=True,
              help="Scan every upload even if the same bytes were decided under the same banks and policy"
                   " (benchmarks, audits). Default: duplicates cost one Redis lookup.")
@click.pass_context
def worker(ctx: click.Context, redis_url: str, processes: int, source_roots: tuple[str, ...], queues: tuple[str, ...],
           burst: bool, job_timeout: int, policy_path: str | None, threads: int | None, providers: tuple[str, ...],
           callback_key_file: str | None, callback_allow: tuple[str, ...], metrics_port: int | None,
           log_format: str, no_cache: bool) -> None:
    """Scan queued uploads: take jobs from Redis, record and deliver verdicts.

    Each verdict becomes the job's result, one entry on the Redis stream
    photosentry:verdicts, and (when the job has a callback_url) a signed POST.
    Quarantined and blocked photos are moved into the quarantine/ and blocked/
    stores under the data directory. A job that keeps failing ends quarantined
    with reason scan_failed: nothing is ever allowed unscanned.

    \b
    Examples:
      photosentry worker --redis-url redis://queue:6379/0 --source-root /srv/uploads -n 4 --threads 1
      photosentry worker --burst            # drain the queues once, then exit

    SIGTERM finishes the current jobs, then exits; a second SIGTERM puts them back
    on the queue and exits at once. Queues are standard RQ: `rq info --url URL`
    shows them. Job layout and metrics: docs/queue.md.
    """
    from .errors import PolicyError
    from .worker import logs
    from .worker.main import run_pool
    from .worker.service import ServiceSettings

    logs.configure(logging.DEBUG if ctx.find_root().params.get("verbose") else logging.INFO,
                   json_format=log_format == "json")
    key = os.environ.get(defaults.CALLBACK_KEY_ENV) or None
    if callback_key_file:
        key = Path(callback_key_file).read_text("utf-8").strip()
    if key is not None and len(key.encode()) < 16:
        raise click.BadParameter("the callback key must be at least 16 bytes", param_hint="--callback-key-file")
    if policy_path:
        try:
            from .worker.policy import Policy

            Policy.from_file(policy_path)
        except PolicyError as exc:
            raise SetupError(str(exc)) from exc
    settings = ServiceSettings(
        redis_url=redis_url, source_roots=source_roots, data_dir=ctx.obj["data_dir"], policy_path=policy_path,
        threads=threads, providers=providers, callback_key=key, callback_allow=callback_allow,
        use_cache=not no_cache,
    )
    try:
        status = run_pool(settings, processes=processes, burst=burst, queues=queues or defaults.QUEUES,
                          max_job_timeout=job_timeout, metrics_port=metrics_port, log_json=log_format == "json",
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
@_redis_url_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--inline", is_flag=True,
              help=f"Send each photo's bytes in the job (up to {defaults.MAX_INLINE_BYTES // 2**20} MB) instead of"
                   " its path; for workers that cannot see this file system.")
@click.option("--as-given", is_flag=True,
              help="Send PATHS exactly as typed (relative paths are then taken from the worker's first source"
                   " root). Default: absolute paths.")
@click.option("--upload-id", default=None, help="Upload id (only with one PATH). Default: a new random id per photo.")
@click.option("--context", "context", multiple=True, metavar="KEY=VALUE",
              help="Upload context for the policy, e.g. --context recipient_is_minor=true. Repeatable.")
@click.option("--callback-url", default=None, help="URL the worker POSTs the signed verdict to.")
@click.option("--queue", type=click.Choice(list(defaults.QUEUES)), default=defaults.UPLOADS_QUEUE, show_default=True,
              help="uploads (high priority) or bulk (rescans).")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Wait up to SECONDS for the verdicts and print them; exit 1 if any is not allow.")
def enqueue(redis_url: str, paths: tuple[str, ...], inline: bool, as_given: bool, upload_id: str | None,
            context: tuple[str, ...], callback_url: str | None, queue: str, wait_s: float | None) -> None:
    """Queue photos (PATHS) for the workers; prints one line per job: JOB_ID UPLOAD_ID PATH.

    \b
    Examples:
      photosentry enqueue /srv/uploads/2026/11/u-8812.jpg
      photosentry enqueue --inline --wait 30 suspicious.jpg
    """
    import uuid

    import redis as _redis

    from .enqueue import enqueue_scan

    if upload_id is not None and len(paths) != 1:
        raise click.UsageError("--upload-id needs exactly one PATH")
    ctx_values = _context_pairs(context)
    client = _redis.Redis.from_url(redis_url)
    jobs: list[tuple[str, str, str]] = []
    try:
        for raw in paths:
            uid = upload_id or f"cli-{uuid.uuid4().hex[:16]}"
            source: str | bytes
            if inline:
                source = Path(raw).read_bytes()
            else:
                source = raw if as_given else os.path.abspath(raw)
            try:
                job_id = enqueue_scan(client, source=source, upload_id=uid, context=ctx_values,
                                      callback_url=callback_url, queue=queue)
            except ValueError as exc:
                raise click.BadParameter(f"{raw}: {exc}", param_hint="PATHS") from exc
            jobs.append((job_id, uid, raw))
            click.echo(f"{job_id} {uid} {raw}")
        if wait_s is None:
            return
        flagged = _wait_for_verdicts(client, jobs, wait_s)
    except _redis.RedisError as exc:
        raise SetupError(f"cannot reach Redis: {exc}") from exc
    finally:
        client.close()
    sys.exit(ExitCode.FLAGGED if flagged else ExitCode.ALLOWED)


def _wait_for_verdicts(client, jobs: list[tuple[str, str, str]], wait_s: float) -> bool:  # type: ignore[no-untyped-def]
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    from .worker.stream import VerdictStream

    deadline = time.monotonic() + wait_s
    pending = {job_id: (uid, raw) for job_id, uid, raw in jobs}
    stream = VerdictStream(client)
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
    for uid, raw in pending.values():
        flagged = True
        click.echo(f"{'pending':<11}{'':<20}{raw}")
    return flagged


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="photosentry", standalone_mode=True)
    except ModelUnavailable as exc:  # pragma: no cover - raised as SetupError above
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.SETUP)
