"""`photosentry ban ...`: add, list, remove and configure banned hashes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import defaults
from ..decode import Limits, decode, read_limited
from ..errors import InvalidHash, PhotoSentryError, UnreadableImage
from ..hashes.banks import BankEntry, BankKind, EntrySource, NewEntry, entries_from_hashes
from ..hashes.codecs import Algorithm, parse_tagged
from ..hashes.signals import hash_image
from .root import (
    cli,
    close_store,
    open_store,
    who_why_options,
)

# -- ban ----------------------------------------------------------------------------


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
@who_why_options
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
    store = open_store(ctx)
    try:
        added = store.add(new, actor=actor, reason=reason)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for entry in added:
        click.echo(f"{entry.id:>6}  {entry.bank:<12} {entry.tagged}")
    click.echo(f"bank version {store.version()}")
    close_store(store)


def _entries_from_image(path: Path, bank: str, label: str) -> list[NewEntry]:
    limits = Limits()
    try:
        data = read_limited(path, limits.max_bytes)
        decoded = decode(data, limits)
    except UnreadableImage as exc:
        raise click.BadParameter(f"{path}: {exc.code}: {exc.message}", param_hint="IMAGES") from exc
    hashes = hash_image(data, decoded.frames, decoded.frame_indices)
    entries, warnings = entries_from_hashes(hashes, bank, label=label or path.name)
    for warning in warnings:
        click.echo(f"warning: {path.name} {warning}", err=True)
    return entries


@ban.command("list")
@click.option("--bank", default=None, help="Only this bank.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed entries (shown with who removed them).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.pass_context
def ban_list(ctx: click.Context, bank: str | None, include_removed: bool, as_json: bool) -> None:
    """List banned hashes, oldest first."""
    store = open_store(ctx)
    if not as_json:
        click.echo(f"{'ID':>6}  {'BANK':<12} {'STATE':<8} {'ADDED BY':<12} {'LABEL':<24} HASH")
    for entry in store.entries(bank=bank, include_removed=include_removed):
        if as_json:
            click.echo(json.dumps(entry.to_dict()))
        else:
            state = "active" if entry.active else "removed"
            click.echo(f"{entry.id:>6}  {entry.bank:<12} {state:<8} {entry.added_by[:11]:<12} {entry.label[:23]:<24} {entry.tagged}")
    close_store(store)


@ban.command("remove")
@click.argument("entry_ids", nargs=-1, type=int)
@click.option("--group", "groups", multiple=True, metavar="SHA256",
              help="Remove every hash that was added from one image (its SHA-256, shown by `ban list --json`).")
@who_why_options
@click.pass_context
def ban_remove(ctx: click.Context, entry_ids: tuple[int, ...], groups: tuple[str, ...], actor: str, reason: str) -> None:
    """Remove banned hashes by ENTRY_IDS (from `ban list`). The entry is kept, marked removed, for audit."""
    if not entry_ids and not groups:
        raise click.UsageError("give at least one ENTRY_ID or --group SHA256")
    store = open_store(ctx)
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
    close_store(store)


@ban.command("configure")
@click.argument("bank")
@click.option("--pdq", type=click.IntRange(0, 127), default=None, help=f"PDQ match distance (default {defaults.PDQ_MATCH_DISTANCE}).")
@click.option("--phash", type=click.IntRange(0, 31), default=None, help=f"pHash match distance (default {defaults.PHASH_MATCH_DISTANCE}).")
@click.option("--dhash", type=click.IntRange(0, 31), default=None, help=f"dHash match distance (default {defaults.DHASH_MATCH_DISTANCE}).")
@click.option("--description", default=None, help="What this bank holds (kept if not given).")
@click.option("--kind", type=click.Choice([k.value for k in BankKind]), default=None,
              help="ban: matches count against a photo (new banks). allow: known false positives; a match"
                   " suppresses ban matches as the policy's [allow] table permits. Kept if not given.")
@who_why_options
@click.pass_context
def ban_configure(ctx: click.Context, bank: str, pdq: int | None, phash: int | None, dhash: int | None,
                  description: str | None, kind: str | None, actor: str, reason: str) -> None:
    """Set how close a perceptual hash must be to match in BANK, and what kind of bank it is.

    Lower is stricter (fewer false matches, more missed copies). Only the distances
    (and description, kind) you give change; the others keep their current value, or
    the default if never set. See docs/matching.md for how the defaults were chosen.

    \b
    Examples:
      photosentry ban configure moderation --phash 6 --by alice --reason "fewer false matches"
      photosentry ban configure false_positives --kind allow --by alice --reason "released photos"
    """
    given = {a: d for a, d in ((Algorithm.PDQ, pdq), (Algorithm.PHASH, phash), (Algorithm.DHASH, dhash)) if d is not None}
    store = open_store(ctx)
    current = store.bank(bank)
    try:
        cfg = store.configure_bank(
            bank,
            distances={**current.distances, **given},
            description=current.description if description is None else description,
            actor=actor,
            reason=reason,
            kind=BankKind(kind) if kind else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{cfg.name} ({cfg.kind.value}): " + ", ".join(f"{a.value} <= {cfg.distance(a)}" for a in Algorithm if a.is_perceptual))
    close_store(store)


