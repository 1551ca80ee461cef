"""`photosentry review`: serve the moderators' review page; `review token NAME` makes a token."""

from __future__ import annotations

import logging
from typing import Any

import click

from .. import defaults
from ..worker import logs
from .quarantine import build_reviewer, review_options
from .root import SetupError, cli, log_format_option


@cli.group(invoke_without_command=True)
@review_options
@click.option("--config", "config_path", envvar=defaults.REVIEW_CONFIG_ENV, type=click.Path(dir_okay=False),
              help=f"Moderators' config (TOML): who may sign in. Env: {defaults.REVIEW_CONFIG_ENV}.")
@click.option("--host", default=defaults.REVIEW_HOST, show_default=True,
              help="Address to listen on. Keep localhost and put a TLS proxy in front to reach it from elsewhere.")
@click.option("--port", type=click.IntRange(1, 65535), default=defaults.REVIEW_PORT, show_default=True)
@click.option("--secure-cookies", is_flag=True,
              help="Mark the session cookie Secure (set this when moderators reach the page over HTTPS).")
@click.option("--lease", "lease_s", type=click.IntRange(10, 3600), default=defaults.REVIEW_LEASE_S, show_default=True,
              help="Seconds an opened item stays reserved for its moderator without a heartbeat.")
@log_format_option
@click.pass_context
def review(ctx: click.Context, config_path: str | None, host: str, port: int, secure_cookies: bool, lease_s: int,
           log_format: str, **opts: Any) -> None:
    """Serve the review page: the quarantine queue, one item at a time.

    Moderators sign in with their token, take the oldest item nobody else has,
    see why it was held (reasons, scores, matches, context) with the photo blurred
    and grey until they reveal it, and release or confirm it with a reason. Keys:
    v reveal, r release, c confirm, n next. Decisions go to the audit trail, the
    verdict stream and the upload's callback, exactly as `quarantine release` and
    `quarantine confirm` send them.

    Run it where the workers' data directory (--data-dir, with quarantine/) is
    mounted, or with their --store (a bucket), and with the workers' Redis,
    policy, source roots and callback key.

    \b
    Examples:
      photosentry review token alice >> /etc/photosentry/review.toml   # then hand alice her token
      photosentry review --config /etc/photosentry/review.toml --redis-url redis://queue:6379/0
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        import uvicorn

        from ..review.web import create_app
    except ImportError as exc:
        raise SetupError(f"the review page needs its extra packages ({exc.name} is missing):"
                         " pip install 'photosentry[review]'") from exc
    from ..review.moderators import ConfigError, Moderators
    from ..worker.review_queue import ReviewQueue

    if not config_path:
        raise click.UsageError(f"give --config FILE (or set {defaults.REVIEW_CONFIG_ENV}): the moderators who may"
                               " sign in; `photosentry review token NAME` makes an entry")
    try:
        moderators = Moderators.from_file(config_path)
    except ConfigError as exc:
        raise SetupError(str(exc)) from exc
    reviewer = build_reviewer(ctx, **opts)
    reviewer.queue = ReviewQueue(reviewer.client, lease_s=lease_s)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach it can try to sign in; use HTTPS in front"
                   " and --secure-cookies", err=True)
    click.echo(f"review page on http://{host}:{port}/ for {len(moderators.digests)} moderator(s)", err=True)
    # The workers' log set-up, so both services ship the same lines: uvicorn's own
    # loggers (errors, access lines) propagate to it instead of printing plain text.
    logs.configure(logging.DEBUG if ctx.find_root().params.get("verbose") else logging.INFO,
                   json_format=log_format == "json")
    uvicorn.run(create_app(reviewer, moderators, secure_cookies=secure_cookies), host=host, port=port,
                log_config=None, log_level="info", proxy_headers=False, server_header=False)


@review.command("token")
@click.argument("name")
def review_token(name: str) -> None:
    """Make a sign-in token for moderator NAME; prints the config lines with its digest.

    The token itself is printed once, as a comment: hand it to the moderator and
    delete that line. The config keeps only the SHA-256 digest.

    \b
    Example:
      photosentry review token alice >> /etc/photosentry/review.toml
    """
    from ..review.moderators import new_token
    from ..worker.review_queue import check_moderator

    try:
        name = check_moderator(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from exc
    token, digest = new_token()
    click.echo(f"# token for {name} (give it to them, then delete this line): {token}")
    click.echo(f"[moderators.{name}]")
    click.echo(f'token_sha256 = "{digest}"')
