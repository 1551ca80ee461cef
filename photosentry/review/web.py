"""The review page: a small server-rendered FastAPI app (Jinja2 templates, no build step).

Security, in the order a request meets it:

- It listens on 127.0.0.1 unless told otherwise (`photosentry review --host`).
- Every response carries a strict Content-Security-Policy (same-origin scripts,
  styles and images only; no inline script; no framing) and ``no-store`` caching.
- Moderators sign in with a personal token (moderators.py); the session is a signed
  cookie (HttpOnly, SameSite=Strict, Secure with --secure-cookies) bound to the
  token, so replacing the token ends the session.
- Every form and the lease heartbeat carry a CSRF token bound to the session,
  compared in constant time; a request without it is refused with 403.
- Photos are served only to the signed-in moderator holding that item's lease,
  blurred and greyscale by CSS until an explicit reveal (a click or ``v``).
- An item is leased to one moderator at a time (queue.py); a decision needs the lease.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

from .. import defaults
from ..errors import StorageUnavailable
from .decisions import CONFIRM, RELEASE, Reviewer
from .moderators import Moderators
from ..worker.review_queue import PENDING, QueueItem, ReviewError

log = logging.getLogger(__name__)

SESSION_COOKIE = "photosentry_review"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: Image formats a browser shows; others get a "no preview" note instead of an <img>.
_IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
                "BMP": "image/bmp"}


def create_app(reviewer: Reviewer, moderators: Moderators, *, secure_cookies: bool = False,
               session_s: int = defaults.REVIEW_SESSION_S) -> FastAPI:
    """The review app for ``reviewer``'s queue, signing in ``moderators``."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    env = Environment(loader=PackageLoader("photosentry.review", "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters["when"] = _when
    env.filters["age"] = _age
    static = Path(__file__).with_name("static")
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    # Added after the headers middleware, so it runs first (outermost) and the session
    # is there for every handler.
    app.add_middleware(SessionMiddleware, secret_key=moderators.session_secret, session_cookie=SESSION_COOKIE,
                       max_age=session_s, same_site="strict", https_only=secure_cookies)

    # -- helpers -------------------------------------------------------------------------

    def csrf_token(request: Request) -> str:
        token = request.session.get(CSRF_FIELD)
        if not token:
            token = secrets.token_urlsafe(32)
            request.session[CSRF_FIELD] = token
        return str(token)

    def csrf_ok(request: Request, given: Any) -> bool:
        expected = request.session.get(CSRF_FIELD)
        return isinstance(given, str) and bool(expected) and hmac.compare_digest(given, str(expected))

    def moderator(request: Request) -> str | None:
        name = request.session.get("moderator")
        if not isinstance(name, str):
            return None
        fingerprint = moderators.fingerprint(name)
        if fingerprint is None or not hmac.compare_digest(str(request.session.get("fp", "")), fingerprint):
            request.session.clear()  # the token was replaced or the moderator removed
            return None
        return name

    def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = env.get_template(template).render(moderator=moderator(request), csrf=csrf_token(request),
                                                 **values)
        return HTMLResponse(html, status_code=status)

    def message(request: Request, title: str, text: str, status: int) -> HTMLResponse:
        return page(request, "message.html", status=status, title=title, text=text)

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    def forbidden(request: Request) -> HTMLResponse:
        return message(request, "Refused", "This form is stale or was not sent by this page (CSRF check"
                                           " failed). Go back, reload and try again.", 403)

    async def signed_form(request: Request) -> tuple[str, Any] | Response:
        """The signed-in moderator and their CSRF-checked form, or the refusal to send."""
        me = moderator(request)
        if me is None:
            return to_login()
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return forbidden(request)
        return me, form

    def go_next(me: str, exclude: tuple[str, ...] = ()) -> RedirectResponse:
        item_id = reviewer.queue.claim_next(me, exclude=exclude)
        return RedirectResponse(f"/item/{item_id}" if item_id else "/?empty=1", status_code=303)

    # -- sign in and out -----------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        return page(request, "login.html", error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return forbidden(request)
        name = moderators.authenticate(str(form.get("token") or ""))
        if name is None:
            log.warning("review sign-in refused", extra={"client": request.client.host if request.client else ""})
            return page(request, "login.html", status=401, error="That token is not valid.")
        request.session.clear()  # a fresh session (and CSRF token) on sign-in
        request.session.update({"moderator": name, "fp": moderators.fingerprint(name), "at": time.time()})
        log.info("moderator signed in", extra={"moderator": name})
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return forbidden(request)
        request.session.clear()
        return to_login()

    # -- the queue -----------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, empty: int = 0) -> Response:
        me = moderator(request)
        if me is None:
            return to_login()
        items = reviewer.queue.pending(limit=200)
        return page(request, "queue.html", items=items, total=reviewer.queue.pending_count(), empty=bool(empty),
                    me=me)

    @app.post("/next")
    async def next_item(request: Request) -> Response:
        checked = await signed_form(request)
        if isinstance(checked, Response):
            return checked
        me, _ = checked
        return go_next(me)

    # -- one item ------------------------------------------------------------------------

    @app.get("/item/{item_id}", response_class=HTMLResponse)
    def item_page(request: Request, item_id: str) -> Response:
        me = moderator(request)
        if me is None:
            return to_login()
        item = reviewer.queue.get(item_id)
        if item is None:
            return message(request, "Not found", f"There is no quarantined item {item_id}.", 404)
        if item.state == PENDING:
            try:
                reviewer.queue.claim(item_id, me)
            except ReviewError as exc:
                return message(request, "In review", exc.message + ". Take the next item instead.", 409)
            item = reviewer.queue.get(item_id) or item
        return page(request, "item.html", item=item, view=_view(item, reviewer), me=me,
                    banks=_banks(reviewer), lease_s=reviewer.queue.lease_ms // 1000)

    @app.get("/item/{item_id}/photo")
    def item_photo(request: Request, item_id: str) -> Response:
        me = moderator(request)
        if me is None:
            return Response("sign in first", status_code=401, media_type="text/plain")
        item = reviewer.queue.get(item_id)
        if item is None or item.claimed_by != me:
            return Response("only the moderator reviewing this item may see it", status_code=403,
                            media_type="text/plain")
        path = reviewer.photo(item)
        media = item.record.verdict.media
        media_type = _IMAGE_TYPES.get((media.format if media is not None else "").upper())
        if path is None or media_type is None:
            return Response("no viewable photo", status_code=404, media_type="text/plain")
        if isinstance(path, Path):
            return FileResponse(path, media_type=media_type, headers={"Content-Disposition": "inline"})
        data = reviewer.photo_bytes(item)  # a store in a bucket: read through the worker's checks
        if data is None:
            return Response("no viewable photo", status_code=404, media_type="text/plain")
        return Response(data, media_type=media_type, headers={"Content-Disposition": "inline"})

    @app.post("/item/{item_id}/renew")
    async def renew(request: Request, item_id: str) -> Response:
        me = moderator(request)
        if me is None:
            return Response(status_code=401)
        if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
            return Response(status_code=403)
        return Response(status_code=204 if reviewer.queue.renew(item_id, me) else 409)

    @app.post("/item/{item_id}/skip")
    async def skip(request: Request, item_id: str) -> Response:
        checked = await signed_form(request)
        if isinstance(checked, Response):
            return checked
        me, _ = checked
        reviewer.queue.unclaim(item_id, me)
        return go_next(me, exclude=(item_id,))

    @app.post("/item/{item_id}/decide")
    async def decide(request: Request, item_id: str, background: BackgroundTasks) -> Response:
        checked = await signed_form(request)
        if isinstance(checked, Response):
            return checked
        me, form = checked
        kind = str(form.get("decision") or "")
        if kind not in (RELEASE, CONFIRM):
            return message(request, "Bad request", "Choose release or confirm.", 400)
        bank_field = "allow_bank" if kind == RELEASE else "ban_bank"
        bank = str(form.get(bank_field) or "").strip() or None
        try:
            # Redis, bank and file work: off the event loop, like the sync handlers.
            outcome = await run_in_threadpool(reviewer.decide, item_id, kind, actor=me,
                                              reason=str(form.get("reason") or ""), bank=bank, deliver=False)
        except ReviewError as exc:
            return message(request, "Not decided", exc.message + ".", 409)
        except StorageUnavailable as exc:  # a bucket store or source did not answer: submit again to finish
            return message(request, "Not finished", f"{exc}. The decision is fixed; submit it again.", 503)
        except ValueError as exc:
            return message(request, "Not decided", str(exc) + ".", 400)
        background.add_task(reviewer.deliver, outcome)
        return await run_in_threadpool(go_next, me, (item_id,))

    return app


def _banks(reviewer: Reviewer) -> dict[str, list[str]]:
    """Bank names for the page's pickers: ban banks for confirm, allow banks for release."""
    ban, allow = {defaults.DEFAULT_BANK}, set()
    for cfg in reviewer.banks.banks():
        (allow if getattr(cfg, "is_allow", False) else ban).add(cfg.name)
    return {"ban": sorted(ban), "allow": sorted(allow) or ["released"]}


def _view(item: QueueItem, reviewer: Reviewer) -> dict[str, Any]:
    """What the item page shows beyond the record itself."""
    verdict = item.record.verdict.to_dict()  # the page shows the record as recorded
    media = verdict.get("media") or {}
    viewable = reviewer.photo(item) is not None and str(media.get("format", "")).upper() in _IMAGE_TYPES
    standing = None
    if item.record.uploader_id:
        standing = reviewer.ledger.standing(item.record.uploader_id, limit=5)
    hashes = {k: v for k, v in (verdict.get("hashes") or {}).items() if k != "frames"}
    return {"viewable": viewable, "media": media, "hashes": hashes, "standing": standing,
            "no_preview": None if viewable else (
                "the photo is not in the quarantine store on this host" if reviewer.photo(item) is None
                else f"the browser cannot show this file ({media.get('format') or 'not a recognised image'})")}


def _when(ts: Any) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def _age(ts: Any) -> str:
    seconds = max(0, int(time.time() - float(ts)))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


__all__ = ["create_app"]
