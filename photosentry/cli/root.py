"""The ``photosentry`` command group, its exit codes and the helpers its subcommands share.

Exit status of ``photosentry scan`` (documented in the README):
    0  every photo was allowed
    1  at least one photo was quarantined or blocked
    2  usage error (bad option, missing path)
    3  set-up error (model, policy or bank could not be loaded)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any
from enum import IntEnum
from pathlib import Path

import click

from .. import defaults
from ..config import data_dir
from ..errors import ModelUnavailable
from ..hashes.banks import BankStore
from ..s3.client import quiet_wire_logs


class ExitCode(IntEnum):
    ALLOWED = 0
    FLAGGED = 1
    USAGE = 2
    SETUP = 3


class SetupError(click.ClickException):
    """Something the command needs could not be loaded; exits with ExitCode.SETUP."""

    exit_code = ExitCode.SETUP


def open_store(ctx: click.Context) -> BankStore:
    """The bank a command works on: the shared Redis bank with ``--redis-url``, else the
    data directory's SQLite bank."""
    from ..worker.assembly import open_bank_store

    redis_url = ctx.obj.get("bank_redis_url")
    if redis_url:
        return open_bank_store(redis=connect_redis(redis_url, what="the Redis bank"))
    try:
        return open_bank_store(data_dir_=ctx.obj["data_dir"])
    except Exception as exc:  # sqlite3 raises several types for a bad file
        raise SetupError(f"cannot open the bank database in {data_dir(ctx.obj['data_dir'])}: {exc}") from exc


def connect_redis(redis_url: str, *, what: str = "Redis") -> Any:
    """A client for ``redis_url`` that answered a PING, or a SetupError naming ``what``
    (the password is never shown)."""
    import redis as _redis

    from ..config import redact_url

    client = _redis.Redis.from_url(redis_url)
    try:
        client.ping()
    except _redis.RedisError as exc:
        raise SetupError(f"cannot reach {what} at {redact_url(redis_url)}: {exc}") from exc
    return client


def close_store(store: BankStore) -> None:
    store.close()


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
    # Before any subcommand builds an S3 client or raises the level: the AWS libraries'
    # DEBUG request dumps carry credentials (`worker` and `review` also filter them).
    quiet_wire_logs()
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir



# -- shared by subcommands ------------------------------------------------------------


def context_pairs(values: Sequence[str], *, policy_path: str | None = None) -> dict[str, str]:
    """``--context KEY=VALUE`` options as a dict, checked against the policy's profiles
    (the file at ``policy_path``, else the shipped one): a value a profile reads but
    cannot (``recipient_age=abc``) is a usage error, never a silent adult profile."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--context")
        out[key.strip()] = value.strip()
    if out:
        from ..errors import PolicyError
        from ..worker.policy import Policy

        try:
            policy = Policy.from_file(policy_path) if policy_path else Policy.default()
        except PolicyError:
            return out  # the command reports the policy's own set-up error
        unreadable = policy.read_context(out).unreadable
        if unreadable:
            raise click.BadParameter(
                "; ".join(f"{key}={out[key]!r}: {why}" for key, why in sorted(unreadable.items()))
                + " (flags take true/false, yes/no or 1/0; ages and other limits take a number)",
                param_hint="--context")
    return out


def walk_files(paths: Sequence[str]) -> Iterator[Path]:
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


def who_why_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--reason", required=True, help="Why (ticket, report id): kept in the audit trail.")(f)
    f = click.option("--by", "actor", required=True, help="Who is making this change: kept in the audit trail.")(f)
    return f


def log_format_option(f):  # type: ignore[no-untyped-def]
    """``--log-format``, the same for every long-running command (worker, review page)."""
    return click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
                        envvar=defaults.LOG_FORMAT_ENV,
                        help="Log lines as JSON objects (one per line, with upload and job ids where there are"
                             f" any) or plain text. Env: {defaults.LOG_FORMAT_ENV}.")(f)


def redis_url_option(f):  # type: ignore[no-untyped-def]
    return click.option(
        "--redis-url", envvar=defaults.REDIS_URL_ENV, required=True, metavar="URL",
        help="Redis holding the queues, the shared bank and the verdict stream, e.g. redis://host:6379/0."
             f" Env: {defaults.REDIS_URL_ENV}. Passwords are never logged.",
    )(f)


def split_roots(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """``--source-root`` values: folders that exist, or ``s3://bucket/prefix/`` URLs
    (``PHOTOSENTRY_SOURCE_ROOTS`` is split on ``os.pathsep``, keeping URLs whole)."""
    from ..s3.location import S3Prefix, is_s3_url
    from ..s3.location import split_roots as split_list

    roots: list[str] = []
    for item in value:
        roots.extend(split_list(item))
    for root in roots:
        if is_s3_url(root):
            try:
                S3Prefix.parse(root)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--source-root") from exc
        elif not os.path.isdir(root):
            raise click.BadParameter(f"{root!r} is not a directory", param_hint="--source-root")
    return tuple(roots)


def check_store(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--store``: a folder, or an ``s3://bucket/prefix/`` URL that parses."""
    from ..s3.location import S3Prefix, is_s3_url

    if value and is_s3_url(value):
        try:
            S3Prefix.parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--store") from exc
    return value or None


def store_option(f):  # type: ignore[no-untyped-def]
    """``--store``, the same for everything that fills or reads the quarantine and blocked stores."""
    return click.option(
        "--store", envvar=defaults.STORE_ENV, default=None, callback=check_store, metavar="DIR|s3://BUCKET/PREFIX/",
        help="Where the quarantine and blocked stores are: a folder, or a private bucket prefix (its"
             " quarantine/ and blocked/ prefixes; AWS credentials and AWS_ENDPOINT_URL from the"
             f" environment). Default: the data directory. Env: {defaults.STORE_ENV}.")(f)


class SourceArgument(click.ParamType):
    """A photo to send, or photos to rescan: an ``s3://`` URL (checked as workers check
    it: an object, or with ``prefix`` a "folder" of a bucket), else a path that must exist."""

    name = "PATH|s3://BUCKET/KEY"

    def __init__(self, *, prefix: bool = False) -> None:
        self.prefix = prefix
        self.path = click.Path(exists=True, dir_okay=prefix)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..s3.location import S3Location, S3Prefix, is_s3_url

        if is_s3_url(value):
            try:
                return S3Prefix.parse(value).url if self.prefix else S3Location.parse(value).url
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return self.path.convert(value, param, ctx)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="photosentry", standalone_mode=True)
    except ModelUnavailable as exc:  # pragma: no cover - raised as SetupError above
        click.echo(f"error: {exc}", err=True)
        sys.exit(ExitCode.SETUP)
