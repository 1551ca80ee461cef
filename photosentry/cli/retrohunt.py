"""`photosentry retrohunt`: find earlier uploads that match bank entries added since."""

from __future__ import annotations

import json

import click

from .. import defaults
from .root import ExitCode, cli, connect_redis, redis_url_option

#: Redis key holding the bank version the last retro-hunt covered.
LAST_VERSION_KEY = "photosentry:retrohunt:version"


@cli.command("retrohunt")
@redis_url_option
@click.option("--since-version", type=click.IntRange(0), default=None,
              help="Hunt for entries added after this bank version (default: where the last hunt stopped).")
@click.option("--requeue", is_flag=True,
              help="Queue a rescan (bulk queue) of every matching upload that was sent by path; its new verdict"
                   " gets upload id '<id>:retrohunt:<version>' and is recorded on the bulk verdict stream"
                   f" {defaults.BULK_VERDICT_STREAM}.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one object per match.")
@click.pass_context
def retrohunt(ctx: click.Context, redis_url: str, since_version: int | None, requeue: bool, as_json: bool) -> None:
    """Find uploads scanned earlier that match bank entries added since a bank version.

    Workers keep every scanned photo's hashes (never the photo) in a hash log with
    bounded retention (defaults: 2 million scans, 30 days). This reads that log and
    matches it against the new entries of ban banks, without decoding any image.
    With --requeue, the workers' new verdicts go on the bulk verdict stream
    (photosentry:verdicts:bulk), like a rescan's, never on the uploads stream.
    Exit status 1 if anything matched.

    \b
    Examples:
      photosentry ban --redis-url $PHOTOSENTRY_REDIS_URL import list.txt --bank csam --by a --reason "list 12"
      photosentry retrohunt                        # report matches since the last hunt
      photosentry retrohunt --since-version 0 --requeue --json
    """
    from ..enqueue import enqueue_scan
    from ..hashes.banks import open_store
    from ..worker.hashlog import HashLog
    from ..worker.retrohunt import hunt, new_entries

    client = connect_redis(redis_url)
    store = open_store(redis=client)
    if since_version is None:
        since_version = int(client.get(LAST_VERSION_KEY) or 0)
    entries, until = new_entries(store, since_version)
    log = HashLog(client)
    log.trim()
    hits = requeued = 0
    for hit in hunt(log, store, entries):
        hits += 1
        job = None
        if requeue:
            # A file or an s3:// object; inline bytes were never kept, so cannot be sent again.
            path = hit.record.source.get("path") or hit.record.source.get("s3")
            if isinstance(path, str):
                upload_id = f"{hit.record.upload_id}:retrohunt:{until}"[:200]
                job = enqueue_scan(client, source=path, upload_id=upload_id, context=dict(hit.record.context),
                                   queue=defaults.BULK_QUEUE, job_id=None)
                requeued += 1
        if as_json:
            click.echo(json.dumps({**hit.to_dict(), "requeued_job": job}))
        else:
            r = hit.record
            click.echo(f"{r.upload_id}  was {r.action:<10} now matches entry {hit.entry.id} of bank {hit.entry.bank}"
                       f" ({hit.entry.algorithm.value} distance {hit.distance}){'  requeued ' + job if job else ''}")
    client.set(LAST_VERSION_KEY, until)
    where = f" (verdicts on {defaults.BULK_VERDICT_STREAM})" if requeued else ""
    click.echo(f"retrohunt: {len(entries)} new entries (bank versions {since_version + 1}..{until}), {len(log)} scans"
               f" in the log, {hits} matches, {requeued} requeued{where}", err=True)
    ctx.exit(ExitCode.FLAGGED if hits else ExitCode.ALLOWED)
