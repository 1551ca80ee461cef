"""`photosentry uploader show ID`: an uploader's penalty score and history."""

from __future__ import annotations

import datetime as _dt
import json

import click

from .. import defaults
from .root import SetupError, cli


@cli.group()
def uploader() -> None:
    """Repeat uploaders: penalty scores that decay, and the flag past a threshold.

    Each upload blocked for its content, and each quarantined upload a moderator
    confirmed, adds a penalty to the uploader named in the upload's context
    (policy [uploaders]). Past the threshold the uploader is flagged.
    """


@uploader.command("show")
@click.argument("uploader_id")
@click.option("--redis-url", envvar=defaults.REDIS_URL_ENV, default=None, metavar="URL",
              help=f"The Redis the workers share. Env: {defaults.REDIS_URL_ENV}.")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False), envvar="PHOTOSENTRY_POLICY",
              help="The workers' policy file (threshold, half-life). Default: the shipped policy.")
@click.option("--limit", type=click.IntRange(1, defaults.UPLOADER_HISTORY_EVENTS), default=50, show_default=True,
              help="Most events to show, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def uploader_show(uploader_id: str, redis_url: str | None, policy_path: str | None, limit: int,
                  as_json: bool) -> None:
    """Print UPLOADER_ID's score now, whether they are flagged, and their history.

    \b
    Example:
      photosentry uploader show user-8812
    """
    import redis as _redis

    from ..config import redact_url
    from ..errors import PolicyError
    from ..worker.policy import Policy
    from ..worker.stream import VerdictStream
    from ..worker.uploaders import UploaderLedger

    if not redis_url:
        raise click.UsageError(f"give --redis-url (or set {defaults.REDIS_URL_ENV})")
    try:
        policy = Policy.from_file(policy_path) if policy_path else Policy.default()
    except PolicyError as exc:
        raise SetupError(str(exc)) from exc
    client = _redis.Redis.from_url(redis_url)
    try:
        standing = UploaderLedger(client, policy.uploaders, VerdictStream(client)).standing(uploader_id, limit=limit)
    except _redis.RedisError as exc:
        raise SetupError(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(standing.to_dict(), indent=1))
        return
    rules = policy.uploaders
    state = "FLAGGED" if standing.flagged else "not flagged"
    click.echo(f"uploader  {uploader_id}")
    click.echo(f"score     {standing.score:.2f} of threshold {rules.threshold:g} ({state}); penalties halve every"
               f" {rules.half_life_days:g} days")
    click.echo(f"flagged   {standing.flags} time(s) so far")
    if not standing.events:
        click.echo("no blocks, quarantines or decisions recorded")
        return
    click.echo(f"\n{'WHEN':<16} {'EVENT':<14} {'PENALTY':>7} {'SCORE':>6}  UPLOAD / DETAIL")
    for e in standing.events:
        when = _dt.datetime.fromtimestamp(e["at"]).strftime("%Y-%m-%d %H:%M")
        detail = e["detail"]
        extra = ",".join(detail.get("reasons", [])) or (f"by {detail['by']}, item {detail.get('item_id')}"
                                                        if "by" in detail else "")
        crossed = "  -> flagged" if e["crossed"] else ""
        click.echo(f"{when:<16} {e['kind']:<14} {e['penalty']:>7.2f} {e['score']:>6.2f}  {e['upload_id']}"
                   f" {extra}{crossed}")
