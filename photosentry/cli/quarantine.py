"""`photosentry quarantine ...`: work through the review queue from a shell.

Exit status: 0 done (or already done the same way), 1 the decision could not be
made (held by another moderator, already decided otherwise, no such item), 2 usage
error, 3 set-up error (Redis, policy or stores unusable).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import click

from .. import defaults
from .root import SetupError, cli, connect_redis, split_roots, store_option, who_why_options


def review_options(f):  # type: ignore[no-untyped-def]
    """Options every command that reads or decides the review queue shares."""
    f = click.option("--callback-allow", "callback_allow", multiple=True, metavar="PREFIX",
                     help="Only call back URLs under PREFIX (repeatable), as the workers do.")(f)
    f = click.option("--callback-allow-network", "callback_networks", multiple=True, metavar="CIDR",
                     envvar=defaults.CALLBACK_NETWORKS_ENV, callback=lambda ctx, param, v: tuple(
                         n.strip() for item in v for n in item.split(",") if n.strip()),
                     help="Internal network callbacks may reach, as the workers allow (repeatable). Env:"
                          f" {defaults.CALLBACK_NETWORKS_ENV}.")(f)
    f = click.option("--callback-key-file", type=click.Path(exists=True, dir_okay=False),
                     help=f"File with the key that signs callbacks (as the workers use). Env:"
                          f" {defaults.CALLBACK_KEY_ENV} (the key itself). Without one, decisions reach the"
                          " pipeline on the verdict stream only.")(f)
    f = click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False),
                     envvar="PHOTOSENTRY_POLICY",
                     help="The workers' policy file (uploader penalties, evidence retention). Default: shipped.")(f)
    f = store_option(f)
    f = click.option("--source-root", "source_roots", multiple=True, envvar=defaults.SOURCE_ROOTS_ENV,
                     callback=split_roots, metavar="DIR|s3://BUCKET/PREFIX/",
                     help="The workers' source roots (folders mounted here, bucket prefixes): a released photo"
                          f" is put back where it was uploaded. Env: {defaults.SOURCE_ROOTS_ENV}.")(f)
    f = click.option("--redis-url", envvar=defaults.REDIS_URL_ENV, default=None, metavar="URL",
                     help=f"The Redis the workers share. Env: {defaults.REDIS_URL_ENV}.")(f)
    return f


def build_reviewer(ctx: click.Context, redis_url: str | None, source_roots: tuple[str, ...],
                   policy_path: str | None, callback_key_file: str | None, callback_allow: tuple[str, ...],
                   callback_networks: tuple[str, ...] = (), store: str | None = None) -> Any:
    """A Reviewer on the workers' Redis and stores, or a SetupError that says what is missing."""
    from ..config import data_dir
    from ..errors import PolicyError
    from ..review.decisions import Reviewer
    from ..worker.delivery import CallbackSigner
    from ..worker.policy import Policy

    if not redis_url:
        raise click.UsageError(f"give --redis-url (or set {defaults.REDIS_URL_ENV}): the review queue is in Redis")
    client = connect_redis(redis_url)
    try:
        policy = Policy.from_file(policy_path) if policy_path else Policy.default()
    except PolicyError as exc:
        raise SetupError(str(exc)) from exc
    key = os.environ.get(defaults.CALLBACK_KEY_ENV) or None
    if callback_key_file:
        key = Path(callback_key_file).read_text("utf-8").strip()
    try:
        signer = CallbackSigner(key) if key else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--callback-key-file") from exc
    home = data_dir(ctx.find_root().obj.get("data_dir"))
    try:
        return Reviewer(client, home=home, policy=policy, source_roots=source_roots, store=store, signer=signer,
                        callback_allow=callback_allow, callback_networks=callback_networks)
    except ImportError as exc:  # s3:// roots or store without boto3
        raise SetupError(str(exc)) from exc
    except ValueError as exc:  # a store (or the data directory) overlapping a source root
        raise SetupError(str(exc)) from exc


@cli.group()
def quarantine() -> None:
    """Review quarantined uploads: list, show, release or confirm them.

    Workers queue every upload they quarantine. A decision is recorded with who made
    it and why, appended to the audit trail, and delivered to the upload pipeline like
    a verdict: a `decision` entry on the stream photosentry:verdicts (also for a photo
    a rescan quarantined, whose verdict is on photosentry:verdicts:bulk) and a signed
    callback to the upload's callback_url. The photos are read from the quarantine
    store under --data-dir, so run this where the workers' data directory is mounted,
    or give the workers' --store (e.g. s3://photosentry-private/).

    \b
    Examples:
      photosentry quarantine list
      photosentry quarantine show 12
      photosentry quarantine release 12 --by alice --reason "beach photo, fine" --allow-bank released
      photosentry quarantine confirm 13 --by alice --reason "ticket 881" --ban banned
    """


@quarantine.command("list")
@review_options
@click.option("--state", type=click.Choice(["pending", "decided", "deciding"]), default="pending", show_default=True,
              help="pending: waiting, oldest first; decided: newest decision first; deciding: interrupted decisions.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Most items to show.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines (one item each) instead of a table.")
@click.pass_context
def quarantine_list(ctx: click.Context, state: str, limit: int, as_json: bool, **opts: Any) -> None:
    """List the review queue, oldest first, with each item's reasons and who holds it."""
    reviewer = build_reviewer(ctx, **opts)
    queue = reviewer.queue
    items = (queue.pending(limit=limit) if state == "pending" else queue.decided(limit=limit)
             if state == "decided" else queue.deciding()[:limit])
    if as_json:
        for item in items:
            click.echo(json.dumps(item.to_dict(), separators=(",", ":")))
        return
    click.echo(f"{'ID':>6}  {'QUEUED':<16} {'STATE':<10} {'REASONS':<28} {'UPLOADER':<14} {'CLAIMED BY':<12} UPLOAD")
    for item in items:
        codes = ",".join(str(r.get("code")) for r in item.record.reasons)
        state_text = item.state if item.state != "pending" else ("in review" if item.claimed_by else "pending")
        click.echo(f"{item.item_id:>6}  {_when(item.record.queued_at):<16} {state_text:<10} {codes[:27]:<28}"
                   f" {(item.record.uploader_id or '-')[:13]:<14} {(item.claimed_by or '-')[:11]:<12}"
                   f" {item.record.upload_id}")
    if state == "pending":
        click.echo(f"\n{queue.pending_count()} pending")


@quarantine.command("show")
@review_options
@click.argument("item_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as one JSON object.")
@click.pass_context
def quarantine_show(ctx: click.Context, item_id: str, as_json: bool, **opts: Any) -> None:
    """Show one item: reasons, scores, matches, hashes, context, the file and any decision."""
    reviewer = build_reviewer(ctx, **opts)
    item = reviewer.queue.get(item_id)
    if item is None:
        raise click.ClickException(f"no quarantined item {item_id}")
    if as_json:
        click.echo(json.dumps(item.to_dict(), indent=1))
        return
    record, verdict = item.record, item.record.verdict.to_dict()  # shown as recorded
    photo = reviewer.photo(item)
    lines = [
        ("item", item.item_id), ("state", item.state + (f" (in review by {item.claimed_by})" if item.claimed_by
                                                         else "")),
        ("upload", record.upload_id), ("queued", _when(record.queued_at)),
        # Where the worker's verdict is: the bulk stream for a photo a rescan quarantined.
        ("verdict", f"{record.stream or 'photosentry:verdicts'} entry {record.stream_id or '-'}"),
        ("uploader", record.uploader_id or "-"), ("policy", f"{verdict.get('policy_version')} profile"
                                                            f" {verdict.get('profile')}"),
        ("file", str(photo) if photo else "not in the quarantine store on this host"),
        ("was at", record.source_path or "-"),
    ]
    media = verdict.get("media") or {}
    if media:
        lines.append(("media", f"{media.get('format')} {media.get('width')}x{media.get('height')},"
                               f" {media.get('frame_count')} frame(s)"))
    for label, value in lines:
        click.echo(f"{label:<10}{value}")
    click.echo("reasons")
    for r in record.reasons:
        click.echo(f"  {r.get('action', ''):<11}{r.get('code', ''):<20}{r.get('text', '')}")
    for s in verdict.get("scores") or []:
        click.echo(f"score     {s.get('model_id', s.get('model', '?'))} {s.get('score')}")
    for m in verdict.get("matches") or []:
        click.echo(f"match     bank {m.get('bank')} entry {m.get('entry_id')} {m.get('algorithm')} distance"
                   f" {m.get('distance')}{' (allow)' if m.get('allow') else ''}{' (weak)' if m.get('weak') else ''}")
    for algo, value in (verdict.get("hashes") or {}).items():
        if algo != "frames":
            click.echo(f"hash      {algo}:{value}")
    for key, value in sorted(record.context.items()):
        click.echo(f"context   {key}={value}")
    if item.decision:
        d = item.decision
        click.echo(f"decision  {d.get('decision')} by {d.get('by')} at {_when(d.get('at'))}: {d.get('reason')}")
        for key, value in sorted((item.effects or {}).items()):
            click.echo(f"  {key}: {_when(value) if key.endswith('_until') else value}")


def _decide(ctx: click.Context, kind: str, item_id: str, actor: str, reason: str, bank: str | None,
            opts: dict[str, Any]) -> None:
    from ..errors import StorageUnavailable
    from ..worker.review_queue import ReviewError

    reviewer = build_reviewer(ctx, **opts)
    try:
        outcome = reviewer.decide(item_id, kind, actor=actor, reason=reason, bank=bank, take_lease=True)
    except ReviewError as exc:
        raise click.ClickException(exc.message) from exc
    except StorageUnavailable as exc:
        raise click.ClickException(f"{exc}. The decision is fixed; run the same command again to finish it.") \
            from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    done = "released" if kind == "release" else "confirmed"
    if outcome.already:
        click.echo(f"item {outcome.item_id} was already {done} by {outcome.decision.get('by')}; nothing changed")
        return
    click.echo(f"item {outcome.item_id} {done} by {actor} (upload {outcome.decision.get('upload_id')})")
    effects = outcome.effects
    if effects.get("bank_entries"):
        bank_name = effects.get("allow_bank") or effects.get("ban_bank")
        click.echo(f"  {len(effects['bank_entries'])} hashes in bank {bank_name!r} (bank version"
                   f" {effects.get('bank_version')})")
    if kind == "release":
        click.echo(f"  restored to {effects['restored_to']}" if effects.get("restored_to")
                   else f"  not restored on disk: {effects.get('restore_note')}")
    else:
        until = effects.get("evidence_until")
        click.echo(f"  file: {effects.get('file')}" + (f" until {_when(until)}" if until else ""))
    if "uploader" in effects:
        u = effects["uploader"]
        click.echo(f"  uploader {u['id']}: score {u['score']:.2f}{' (flagged)' if u.get('flagged') else ''}")
    click.echo(f"  stream entry {effects.get('stream_id')}")
    callback = (reviewer.queue.get(outcome.item_id).effects or {}).get("callback")
    if callback is not None:
        click.echo(f"  callback {'delivered' if callback.get('delivered') else 'NOT delivered: '}"
                   f"{'' if callback.get('delivered') else callback.get('error')}")


@quarantine.command("release")
@review_options
@click.argument("item_id")
@who_why_options
@click.option("--allow-bank", default=None, metavar="BANK",
              help="Also put the photo's hashes in this allow bank (created if new), so the same false"
                   " positive is allowed next time instead of coming back to review.")
@click.pass_context
def quarantine_release(ctx: click.Context, item_id: str, actor: str, reason: str, allow_bank: str | None,
                       **opts: Any) -> None:
    """Allow a quarantined photo: put it back and deliver an allow verdict.

    The photo goes back to the path it was uploaded to (when --source-root covers it)
    and the pipeline gets a `decision` entry with action allow and reason
    moderator_released. Releasing twice is harmless; releasing an item someone else
    is reviewing on the web page is refused.

    \b
    Examples:
      photosentry quarantine release 12 --by alice --reason "holiday photo, not nudity"
      photosentry quarantine release 12 --by alice --reason "false match" --allow-bank released
    """
    _decide(ctx, "release", item_id, actor, reason, allow_bank, opts)


@quarantine.command("confirm")
@review_options
@click.argument("item_id")
@who_why_options
@click.option("--ban", "ban_bank", default=None, metavar="BANK",
              help="Also add the photo's hashes to this ban bank (e.g. banned), so copies are blocked at upload.")
@click.pass_context
def quarantine_confirm(ctx: click.Context, item_id: str, actor: str, reason: str, ban_bank: str | None,
                       **opts: Any) -> None:
    """Block a quarantined photo and deliver a block verdict.

    The uploader's penalty score rises (policy [uploaders]). The file is kept as
    evidence in the blocked store until `quarantine purge` removes it, or deleted at
    once, as the policy's [review] table says. With --ban, its hashes (never the
    photo) go into BANK and every worker blocks copies within a second.

    \b
    Examples:
      photosentry quarantine confirm 13 --by alice --reason "ticket 881"
      photosentry quarantine confirm 13 --by alice --reason "known series" --ban banned
    """
    _decide(ctx, "confirm", item_id, actor, reason, ban_bank, opts)


@quarantine.command("audit")
@review_options
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.pass_context
def quarantine_audit(ctx: click.Context, limit: int, **opts: Any) -> None:
    """The newest decisions from the audit trail: who decided what, when and why."""
    reviewer = build_reviewer(ctx, **opts)
    for row in reviewer.queue.audit(count=limit):
        entry = row["entry"]
        bank = f" bank {entry.get('bank')}" if entry.get("bank") else ""
        click.echo(f"{_when(entry.get('at')):<16} item {row['item_id']:>6} {row['decision']:<8} by {row['by']:<12}"
                   f"{bank} upload {entry.get('upload_id')}: {entry.get('reason')}")


@quarantine.command("purge")
@review_options
@click.pass_context
def quarantine_purge(ctx: click.Context, **opts: Any) -> None:
    """Delete evidence files whose retention (policy [review] evidence_days) has ended.

    Only the files go: the decision, its audit entry and any bank entries stay.
    Run it daily from cron on the review host.
    """
    reviewer = build_reviewer(ctx, **opts)
    purged = reviewer.purge()
    click.echo(f"{len(purged)} evidence file(s) purged" + (f": items {', '.join(purged)}" if purged else ""))


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")
