"""`photosentry ban ...`: add, list, remove and configure banned hashes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import defaults
from ..decode import Limits, decode, read_limited
from ..errors import InvalidHash, PhotoSentryError, UnreadableImage
from ..hashes.algorithms import PERCEPTUAL
from ..hashes.banks import BankEntry, BankKind, BankStore, EntrySource, NewEntry, check_bank_name, entries_from_hashes
from ..hashes.codecs import Algorithm, parse_tagged
from ..hashes.imports import ImportFormat
from ..hashes.derived import derive
from ..hashes.evidence import describe
from ..hashes.localfeatures import banned_features
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
        click.echo(f"{entry.id:>6}  {entry.bank:<12} {entry.shown}")
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
    entries, warnings = entries_from_hashes(hashes, bank, label=label or path.name, derived=derive(decoded.frames[0]),
                                            features=banned_features(decoded.frames[0]))
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
            click.echo(f"{entry.id:>6}  {entry.bank:<12} {state:<8} {entry.added_by[:11]:<12} {entry.label[:23]:<24} {entry.shown}")
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
        click.echo(f"{entry.id:>6}  removed  {entry.bank:<12} {entry.shown}")
    click.echo(f"bank version {store.version()}")
    close_store(store)


def distance_options(f):  # type: ignore[no-untyped-def]
    """A ``--<algorithm>`` match-distance option per perceptual algorithm, from the registry
    (passed to the command by algorithm name: ``pdq=``, ``phash=`` ...)."""
    for algorithm in reversed(PERCEPTUAL):  # click lists options in the reverse order they are added
        spec = algorithm.spec
        f = click.option(spec.cli_option, algorithm.value, type=click.IntRange(0, spec.max_distance), default=None,
                         help=f"{spec.label} match distance (default {spec.default_distance}).")(f)
    return f


@ban.command("configure")
@click.argument("bank")
@distance_options
@click.option("--description", default=None, help="What this bank holds (kept if not given).")
@click.option("--kind", type=click.Choice([k.value for k in BankKind]), default=None,
              help="ban: matches count against a photo (new banks). allow: known false positives; a match"
                   " suppresses ban matches as the policy's [allow] table permits. Kept if not given.")
@who_why_options
@click.pass_context
def ban_configure(ctx: click.Context, bank: str, description: str | None, kind: str | None, actor: str, reason: str,
                  **distances: int | None) -> None:
    """Set how close a perceptual hash must be to match in BANK, and what kind of bank it is.

    Lower is stricter (fewer false matches, more missed copies). Only the distances
    (and description, kind) you give change; the others keep their current value, or
    the default if never set. See docs/matching.md for how the defaults were chosen.

    \b
    Examples:
      photosentry ban configure moderation --phash 6 --by alice --reason "fewer false matches"
      photosentry ban configure false_positives --kind allow --by alice --reason "released photos"
    """
    given = {Algorithm(name): d for name, d in distances.items() if d is not None}
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
    click.echo(f"{cfg.name} ({cfg.kind.value}): " + ", ".join(f"{a.value} <= {cfg.distance(a)}" for a in PERCEPTUAL))
    close_store(store)


# -- import / export / check / history / stats / snapshot ------------------------------


def snapshot_dir(ctx: click.Context, store: BankStore) -> Path:
    """Where this store's columnar snapshots live: ``<data dir>/bank-snapshots/<store id>``,
    shared with scan, workers and rescans on this host that open the same store."""
    from ..config import data_dir, ensure_private_dir
    from ..hashes.snapshot import snapshot_dir as store_snapshot_dir

    return store_snapshot_dir(ensure_private_dir(data_dir(ctx.obj["data_dir"])), store)


def _progress(total: int | None, desc: str, unit: str = "it"):  # type: ignore[no-untyped-def]
    import sys

    from tqdm import tqdm

    # Quiet when stderr is not a terminal (cron, CI, pipes): no control characters in logs.
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not sys.stderr.isatty(), leave=False)


@ban.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--bank", default=None,
              help=f"Bank for every entry (default: the file's own bank column, else {defaults.DEFAULT_BANK}).")
@click.option("--format", "fmt", type=click.Choice([f.value for f in ImportFormat]), default="auto", show_default=True,
    help="plain: one hash per line (VALUE, ALGO VALUE or ALGO:VALUE); csv/jsonl: our export;"
         " te-pdq: ThreatExchange PDQ lists (PDQHEX,QUALITY); auto: guess from the name and first line.")
@click.option("--algorithm", type=click.Choice([a.value for a in Algorithm]), default=None,
              help="Algorithm of bare values in a plain list (64 hex digits could be PDQ or SHA-256).")
@click.option("--label", default="", help="Label for entries whose line has none.")
@click.option("--skip-invalid", is_flag=True, help="Import the valid lines even if some are bad (default: all or nothing).")
@who_why_options
@click.pass_context
def ban_import(ctx: click.Context, file: str, bank: str | None, fmt: str, algorithm: str | None, label: str,
               skip_invalid: bool, actor: str, reason: str) -> None:
    """Import a hash list into a bank, all or nothing.

    Every line is validated first (algorithm, length, hex, all-zero hashes); a bad line
    is reported with its number and, without --skip-invalid, nothing is written.
    Duplicates (in the file or already in the bank) are merged. Each new entry is in
    the audit trail with --by and --reason. A snapshot is written afterwards so
    workers load the bank in seconds.

    \b
    Examples:
      photosentry ban import ncmec-md5.txt --algorithm md5 --bank csam --by importer --reason "list 2026-11"
      photosentry ban import pdq-list.csv --format te-pdq --bank csam --by importer --reason "TE export"
      photosentry ban export --format jsonl > banks.jsonl   # ... and on another instance:
      photosentry ban import banks.jsonl --by importer --reason "migration"
    """
    import os
    import shutil
    import sys
    import tempfile

    from ..hashes.imports import ImportReport, iter_import
    from ..hashes.snapshot import write_snapshot

    if bank is not None:
        try:
            check_bank_name(bank)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--bank") from exc
    spool = None
    if file == "-":  # stdin is read twice (validate, then import): spool it to a private temp file
        spool = tempfile.TemporaryFile()
        shutil.copyfileobj(sys.stdin.buffer, spool)
        spool.seek(0)
        stream = spool
    else:
        try:
            stream = open(file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise click.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from exc
    size = os.fstat(stream.fileno()).st_size
    kwargs = dict(fmt=ImportFormat(fmt), bank=bank, default_bank=defaults.DEFAULT_BANK,
                  algorithm=Algorithm(algorithm) if algorithm else None, label=label, filename=file)
    try:
        report = ImportReport()
        with _progress(size, "validating", "B") as bar:
            for _ in iter_import(stream, report, progress=bar, **kwargs):  # type: ignore[arg-type]
                pass
        for problem in report.problems:
            click.echo(f"{file}: {problem}", err=True)
        if report.problem_count > len(report.problems):
            click.echo(f"{file}: ... and {report.problem_count - len(report.problems)} more bad lines", err=True)
        if report.problem_count and not skip_invalid:
            raise click.ClickException(
                f"{report.problem_count} bad line(s) of {report.lines}; nothing imported"
                " (fix them, or pass --skip-invalid to import the valid lines)")
        stream.seek(0)
        store = open_store(ctx)
        second = ImportReport()
        with _progress(report.valid, "importing", "entries") as bar:
            added = store.import_entries(iter_import(stream, second, **kwargs),  # type: ignore[arg-type]
                                         actor=actor, reason=reason, progress=bar.update)
    finally:
        stream.close()
    click.echo(f"{report.lines} lines: {report.valid} valid, {added} new, {report.valid - added} merged"
               f" into existing entries, {report.problem_count} skipped; bank version {store.version()}")
    if added:
        snap = write_snapshot(store, snapshot_dir(ctx, store))
        click.echo(f"snapshot v{snap.version} written ({sum(snap.counts.values())} entries)")
    close_store(store)


@ban.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True)
@click.option("--bank", default=None, help="Only this bank.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed entries (they are not re-imported).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="-",
              help="File to write (default: standard output).")
@click.pass_context
def ban_export(ctx: click.Context, fmt: str, bank: str | None, include_removed: bool, output: str) -> None:
    """Export entries with every audit field; `ban import` reads the result back.

    \b
    Examples:
      photosentry ban export --format csv --bank csam -o csam.csv
      photosentry ban export > everything.jsonl
    """
    from ..hashes.imports import write_csv, write_jsonl

    store = open_store(ctx)
    entries = store.entries(bank=bank, include_removed=include_removed)
    with click.open_file(output, "w", encoding="utf-8") as out:
        count = (write_csv if fmt == "csv" else write_jsonl)(entries, out)
    if output != "-":
        click.echo(f"{count} entries written to {output}", err=True)
    close_store(store)


@ban.command("check")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per image with its matches.")
@click.pass_context
def ban_check(ctx: click.Context, images: tuple[str, ...], as_json: bool) -> None:
    """Which bank entries do IMAGES match, at what distance, in which bank?

    Each match says whether it is strong (enough to act on: exact bytes, PDQ, two
    hashes of one banned image, keypoints in place) or WEAK (a lone pHash or dHash, a
    flat picture's hash: shown, never acted on), and which region of the image matched
    when it was not the whole image (a photo inside a screenshot, a collage cell).

    Exit status 0 if nothing matched strongly, 1 if any image matched a ban bank strongly.

    \b
    Example:
      photosentry ban check suspicious.jpg
    """
    from ..hashes.matcher import BankMatcher

    store = open_store(ctx)
    matcher = BankMatcher(store, snapshot_dir=snapshot_dir(ctx, store))
    flagged = False
    for image in images:
        path = Path(image)
        limits = Limits()
        try:
            data = read_limited(path, limits.max_bytes)
            decoded = decode(data, limits)
        except UnreadableImage as exc:
            click.echo(f"{path}: {exc.code}: {exc.message}", err=True)
            flagged = True
            continue
        matches = matcher.match(hash_image(data, decoded.frames, decoded.frame_indices, regions=True,
                                           features=matcher.wants_features))
        flagged |= any(not m.allow and not m.weak for m in matches)
        if as_json:
            click.echo(json.dumps({"image": str(path), "matches": [m.to_dict() for m in matches]}))
            continue
        if not matches:
            click.echo(f"{path}: no match (bank version {matcher.version})")
        for m in matches:
            kind = "allow" if m.allow else "ban"
            where = f" region {m.region}" if m.region else ""
            how = f"{m.inliers} keypoints" if m.algorithm.is_features else f"distance {m.distance}"
            click.echo(f"{path}: entry {m.entry_id} bank {m.bank} ({kind}) {m.algorithm.value} {how}"
                       f" frame {m.frame} variant {m.variant}{where} {'WEAK' if m.weak else 'strong'}:"
                       f" {describe(m)} {m.label}")
    close_store(store)
    ctx.exit(1 if flagged else 0)


@ban.command("history")
@click.option("--bank", default=None, help="Only changes to this bank.")
@click.option("--entry", "entry_id", type=int, default=None, help="Only changes to this entry.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of a table.")
@click.pass_context
def ban_history(ctx: click.Context, bank: str | None, entry_id: int | None, limit: int, as_json: bool) -> None:
    """The audit trail: who added, removed or reconfigured what, when and why (newest first).

    \b
    Examples:
      photosentry ban history --bank csam --limit 20
      photosentry ban history --entry 1234
    """
    import datetime as dt

    store = open_store(ctx)
    changes = store.history(bank=bank, entry_id=entry_id, limit=limit)
    values = {e.id: e.shown for e in store.get_many([c.entry_id for c in changes if c.entry_id is not None])}
    if not as_json:
        click.echo(f"{'VERSION':>8}  {'WHEN (UTC)':<19}  {'WHO':<14} {'WHAT':<7} {'BANK':<12} {'ENTRY':>7}  REASON / HASH")
    for c in changes:
        when = dt.datetime.fromtimestamp(c.at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        value = values.get(c.entry_id, "") if c.entry_id is not None else ""
        if as_json:
            click.echo(json.dumps({"version": c.version, "at": c.at, "actor": c.actor, "op": c.op.value,
                                   "bank": c.bank, "entry_id": c.entry_id, "hash": value, "reason": c.reason}))
        else:
            entry = str(c.entry_id) if c.entry_id is not None else "-"
            click.echo(f"{c.version:>8}  {when:<19}  {c.actor[:14]:<14} {c.op.value:<7} {c.bank[:12]:<12} {entry:>7}"
                       f"  {c.reason}  {value}")
    close_store(store)


@ban.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ban_stats(ctx: click.Context, as_json: bool) -> None:
    """Entries per bank and algorithm, bank kinds and distances, the bank version and snapshot."""
    from collections import Counter

    from ..hashes.snapshot import latest_snapshot

    store = open_store(ctx)
    active: Counter[tuple[str, str]] = Counter()
    removed: Counter[str] = Counter()
    for algorithm in Algorithm:
        for _, _, banks in store.active_columns(algorithm):
            active.update((b, algorithm.value) for b in banks)
    for entry in store.entries(include_removed=True):
        if not entry.active:
            removed[entry.bank] += 1
    version = store.version()
    snap = latest_snapshot(snapshot_dir(ctx, store), max_version=version, store_id=store.store_id())
    rows = []
    for cfg in store.banks():
        counts = {a.value: active[(cfg.name, a.value)] for a in Algorithm}
        rows.append({"bank": cfg.name, "kind": cfg.kind.value, "active": sum(counts.values()), "removed": removed[cfg.name],
                     "by_algorithm": counts,
                     "distances": {a.value: cfg.distance(a) for a in PERCEPTUAL}})
    if as_json:
        click.echo(json.dumps({"version": version, "snapshot": snap.version if snap else None, "banks": rows}))
    else:
        click.echo(f"{'BANK':<16} {'KIND':<6} {'ACTIVE':>9} {'REMOVED':>8} " + " ".join(f"{a.value:>8}" for a in Algorithm)
                   + "  DISTANCES")
        for r in rows:
            click.echo(f"{r['bank'][:16]:<16} {r['kind']:<6} {r['active']:>9} {r['removed']:>8} "
                       + " ".join(f"{r['by_algorithm'][a.value]:>8}" for a in Algorithm)
                       + "  " + ", ".join(f"{k} {v}" for k, v in r["distances"].items()))
        lag = f"v{snap.version} ({version - snap.version} changes behind)" if snap else "none (`ban snapshot`)"
        click.echo(f"bank version {version}; snapshot {lag}")
    close_store(store)


@ban.command("snapshot")
@click.pass_context
def ban_snapshot(ctx: click.Context) -> None:
    """Write a columnar snapshot of the bank, so matchers (scan, worker) load it in seconds.

    `ban import` writes one itself. Run it after large changes made another way (for a
    Redis bank, on each worker host, e.g. from cron).
    """
    from ..hashes.snapshot import write_snapshot

    store = open_store(ctx)
    with _progress(None, "reading", "entries") as bar:
        snap = write_snapshot(store, snapshot_dir(ctx, store), progress=bar.update)
    click.echo(f"snapshot v{snap.version}: " + ", ".join(f"{k} {v}" for k, v in snap.counts.items()) + f" in {snap.path}")
    close_store(store)
