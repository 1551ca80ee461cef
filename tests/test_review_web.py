"""The review page in a real headless browser (Debian's chromium driven by Playwright).

A real worker quarantines two photos; alice signs in, sees the oldest one blurred and
grey, reveals it, confirms it with a ban using the keyboard and lands on the next
one, while bob is kept off the item she holds. The ban then blocks a re-upload. An
unauthenticated request and a forged form are refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from photosentry.review.decisions import Reviewer
from photosentry.review.moderators import Moderators, new_token
from photosentry.worker.review_queue import ReviewQueue
from photosentry.worker.delivery import CallbackSigner
from photosentry.worker.service import ScanService, ServiceSettings

from .callback_receiver import KEY, Receiver
from .corpus import Corpus
from .test_quarantine import quarantined, stream_entries, upload

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    tokens, lines = {}, []
    for name in ("alice", "bob"):
        tokens[name], digest = new_token()
        lines += [f"[moderators.{name}]", f'token_sha256 = "{digest}"']
    config = tmp_path / "review.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, tokens


@pytest.fixture
def site(redis_client: redis.Redis, settings: ServiceSettings, tokens: tuple[Path, dict[str, str]]) -> Iterator[str]:
    import uvicorn

    from photosentry.review.web import create_app

    reviewer = Reviewer(redis_client, home=Path(settings.data_dir), source_roots=settings.source_roots,
                        signer=CallbackSigner(KEY), callback_networks=("127.0.0.0/8",))
    app = create_app(reviewer, Moderators.from_file(tokens[0]))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the review server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def sign_in(page: object, site: str, token: str) -> None:
    page.goto(site + "/")
    assert page.url == site + "/login"
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_url(site + "/")


def test_moderator_reviews_blurred_items_by_keyboard_and_the_ban_blocks_a_re_upload(
    redis_client: redis.Redis, service: ScanService, settings: ServiceSettings, corpus: Corpus,
    receiver: Receiver, site: str, browser: object, tokens: tuple[Path, dict[str, str]], tmp_path: Path,
) -> None:
    root = Path(settings.source_roots[0])
    quarantined(redis_client, service, corpus, "coffee", "up-1", root,
                context={"uploader_id": "u-7", "recipient_age": 31}, callback_url=receiver.url)
    quarantined(redis_client, service, corpus, "chelsea", "up-2", root, context={"uploader_id": "u-8"})
    receiver.received.clear()
    alice = browser.new_context(viewport={"width": 1280, "height": 860})
    page = alice.new_page()
    sign_in(page, site, tokens[1]["alice"])
    assert "2 pending" in page.inner_text("h1")
    assert page.locator("table.queue tbody tr").count() == 2

    page.click("#start")
    page.wait_for_url(site + "/item/1")
    photo = page.locator("#photo")
    photo.wait_for()
    page.wait_for_function("document.getElementById('photo').complete")
    assert page.evaluate("document.getElementById('photo').naturalWidth") > 0  # served to her
    style = page.evaluate("getComputedStyle(document.getElementById('photo')).filter")
    assert "blur" in style and "grayscale" in style
    body = page.inner_text("main")
    assert "bank_match" in body and "moderation" in body and "recipient_age" in body and "up-1" in body
    assert "v reveal / hide · r release · c confirm · n next" in page.inner_text(".legend")
    shot = tmp_path / "review-page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("PHOTOSENTRY_SCREENSHOT"):
        shutil.copy(shot, os.environ["PHOTOSENTRY_SCREENSHOT"])

    page.click("#reveal")  # an explicit click, then the key toggles it back and forth
    assert page.evaluate("getComputedStyle(document.getElementById('photo')).filter") == "none"
    page.keyboard.press("v")
    assert "blur" in page.evaluate("getComputedStyle(document.getElementById('photo')).filter")
    page.keyboard.press("v")
    assert page.get_attribute("#reveal", "aria-pressed") == "true"

    # Bob signs in meanwhile: he never gets the item alice holds.
    bob = browser.new_context()
    bob_page = bob.new_page()
    sign_in(bob_page, site, tokens[1]["bob"])
    bob_page.click("#start")
    bob_page.wait_for_url(site + "/item/2")
    response = bob_page.goto(site + "/item/1")
    assert response.status == 409 and "being reviewed by alice" in bob_page.inner_text("main")
    bob_page.goto(site + "/")
    bob_page.click("#start")  # his own item again, not hers
    bob_page.wait_for_url(site + "/item/2")
    bob.close()

    # Confirm with a ban, by keyboard: the reason, Esc, then c; the next item follows.
    page.fill("#reason", "known series")
    page.select_option("#ban_bank", "banned")
    page.keyboard.press("Enter")  # Enter in the reason field does not submit
    assert page.url == site + "/item/1"
    page.keyboard.press("Escape")
    ReviewQueue(redis_client).unclaim("2", "bob")  # bob closed his tab: his lease is given up
    page.keyboard.press("c")
    page.wait_for_url(site + "/item/2")
    assert "up-2" in page.inner_text("main")
    assert "blur" in page.evaluate("getComputedStyle(document.getElementById('photo')).filter")

    queue = ReviewQueue(redis_client)
    item = queue.get("1")
    assert item.state == "confirmed" and item.decision["by"] == "alice" and item.decision["bank"] == "banned"
    assert item.decision["reason"] == "known series"
    assert [(e["event"], e["action"]) for e in stream_entries(redis_client)][-1] == ("decision", "block")
    deadline = time.monotonic() + 15
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.received, queue.get("1").effects.get("callback")
    assert receiver.received[0]["event"] == "decision" and receiver.received[0]["upload_id"] == "up-1"

    # The ban now blocks a re-upload of the same photo.
    again = upload(redis_client, service, corpus.clean["coffee"].read_bytes(), "up-3")
    assert again["action"] == "block"
    assert any(r["code"] == "bank_match" and r["detail"]["bank"] == "banned" for r in again["reasons"])

    # A forged form (no valid CSRF token) is refused, even with alice's session cookie.
    forged = page.request.post(f"{site}/item/2/decide",
                               form={"csrf": "forged", "decision": "release", "reason": "x"}, max_redirects=0)
    assert forged.status == 403
    missing = page.request.post(f"{site}/item/2/decide", form={"decision": "release", "reason": "x"},
                                max_redirects=0)
    assert missing.status == 403
    assert queue.get("2").state == "pending"
    alice.close()

    # Without a session: no photo, no page, no decision.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{site}/item/2/photo")
    assert err.value.code == 401
    err.value.close()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    for request in (urllib.request.Request(f"{site}/item/2"),
                    urllib.request.Request(f"{site}/item/2/decide", data=b"decision=release&reason=x",
                                           method="POST")):
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(request)
        assert err.value.code == 303 and err.value.headers["Location"] == "/login"
        err.value.close()
    assert queue.get("2").state == "pending"


def test_sign_in_refuses_bad_tokens_and_sets_a_strict_session_cookie(
    site: str, browser: object, tokens: tuple[Path, dict[str, str]]
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(site + "/login")
    page.fill("#token", "not-a-token")
    page.click("#sign-in")
    assert "That token is not valid." in page.inner_text("main")
    page.fill("#token", tokens[1]["bob"])
    page.click("#sign-in")
    page.wait_for_url(site + "/")
    [cookie] = [c for c in context.cookies() if c["name"] == "photosentry_review"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    headers = page.request.get(site + "/").headers
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    context.close()
