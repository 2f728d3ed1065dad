"""The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
live uvicorn server over a copy of the demo index: search, play from the best moment, "more like
this", upload a clip, filters, details, indexing progress, and laptop / phone screenshots.

Skipped when Chromium or Playwright is missing (scripts/setup.sh installs both for CI). Screenshots go
to ``$SOUNDSCOPE_SCREENSHOT_DIR`` when set, else to a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
import time
import types
from pathlib import Path

import pytest

from tests.conftest import skip_unless_ci

CHROMIUM = os.environ.get("SOUNDSCOPE_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    skip_unless_ci(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)", module=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright (the dev extra)")
uvicorn = pytest.importorskip("uvicorn", reason="browser tests need uvicorn (the dev extra)")

from soundscope.api import Library  # noqa: E402
from soundscope.server import create_app  # noqa: E402
from tests.conftest import DEMO  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
]
DOG = DEMO / "sounds" / "dog" / "1-30226-A.ogg"
OTHER_DOG = DEMO / "sounds" / "dog" / "1-30344-A.ogg"
TIMEOUT_MS = 30_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(demo_lib, tmp_path_factory):
    """uvicorn on 127.0.0.1:<free port> in a thread, over a copy of the demo index (so indexing from the
    page leaves the shared one alone), allowed to index one fresh folder."""
    data = tmp_path_factory.mktemp("browser-index")
    dst = sqlite3.connect(data / "catalog.sqlite")
    demo_lib.store.catalog.conn.backup(dst)
    dst.close()
    lib = Library(data, analyzers=demo_lib.analyzers, music_analyzers=demo_lib.music_analyzers, asr_model="none")
    allowed = tmp_path_factory.mktemp("browser-allowed")
    (allowed / "new").mkdir()
    shutil.copy(DEMO / "sounds" / "rooster" / "1-26806-A.ogg", allowed / "new" / "rooster.ogg")
    app = create_app(lib, allow_roots=[allowed])
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield types.SimpleNamespace(url=f"http://127.0.0.1:{port}", lib=lib, allowed=allowed)
    srv.should_exit = True
    thread.join(15)
    lib.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def expected_errors() -> list[str]:
    """Console errors a test expects (substrings), e.g. the 415 answer to a rejected upload."""
    return []


@pytest.fixture
def page(browser, live, expected_errors):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.goto(live.url + "/")
    yield pg
    ctx.close()
    unexpected = [p for p in problems if not any(e in p for e in expected_errors)]
    assert not unexpected, unexpected


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("SOUNDSCOPE_SCREENSHOT_DIR")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _search(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector("#results .card:not(.skeleton)")


def _card_paths(page) -> list[str]:
    return page.eval_on_selector_all("#results .card .name", "els => els.map(e => e.title)")


def test_search_and_play(page, live):
    _search(page, "dog barking")
    paths = _card_paths(page)
    assert paths[:2] and all("/sounds/dog/" in p for p in paths[:2])
    assert "q=dog+barking" in page.url
    first = page.locator("#results .card").first
    assert first.locator(".why li").count() >= 1  # why it matched
    first.locator(".play").click()
    page.wait_for_function(
        "() => { const a = document.querySelector('#results .card audio');"
        " return a && !a.paused && a.currentTime > 0; }"
    )
    assert "playing" in first.get_attribute("class")
    first.locator(".play").click()  # pause
    page.wait_for_function("() => document.querySelector('#results .card audio').paused")


def test_playback_starts_at_the_matching_moment(page):
    _search(page, "whale song")
    start = page.eval_on_selector_all("#results .card", "els => els.map(e => Number(e.dataset.start))")
    i = next(k for k, s in enumerate(start) if s > 0)
    card = page.locator("#results .card").nth(i)
    card.locator(".play").click()
    page.wait_for_function(
        "([i, s]) => { const a = document.querySelectorAll('#results .card audio')[i];"
        " return !a.paused && a.currentTime >= s - 0.05; }",
        arg=[i, start[i]],
    )
    t = page.evaluate("i => document.querySelectorAll('#results .card audio')[i].currentTime", i)
    assert start[i] - 0.05 <= t < start[i] + 10
    # the waveform image loaded, with the matching stretch highlighted
    page.wait_for_function("i => document.querySelectorAll('#results .card .wave img')[i].naturalWidth > 0", arg=i)
    assert "start=" in card.locator(".wave img").get_attribute("src")


def test_more_like_this(page):
    _search(page, "dog barking")
    first = page.locator("#results .card").first
    clicked = first.locator(".name").get_attribute("title")
    first.locator(".like").click()
    page.wait_for_function("() => location.search.includes('like=')")
    page.wait_for_selector("#status .like-pill")
    page.wait_for_selector("#results .card:not(.skeleton)")
    paths = _card_paths(page)
    assert clicked not in paths
    assert paths[0] in (str(DOG), str(OTHER_DOG))
    page.go_back()  # back to the text results
    page.wait_for_function("() => document.querySelector('#q').value === 'dog barking'")


def test_upload_a_clip(page):
    page.set_input_files("#file", str(DOG))
    page.wait_for_selector("#status .like-pill")
    page.wait_for_selector("#results .card:not(.skeleton)")
    assert page.inner_text("#status .like-pill") == DOG.name
    assert _card_paths(page)[0] == str(DOG)  # the same recording comes first


def test_upload_rejects_non_audio_with_a_clear_message(page, tmp_path, expected_errors):
    expected_errors.append("status of 415")
    junk = tmp_path / "notes.mp3"
    junk.write_text("this is not audio at all\n" * 20)
    page.set_input_files("#file", str(junk))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an audio file" in page.inner_text("#error")


def test_kind_filter_and_details(page):
    _search(page, "music")
    page.click('#kind button[data-kind="music"]')
    page.wait_for_function("() => location.search.includes('kind=music')")
    page.wait_for_selector("#results .card:not(.skeleton)")
    badges = page.eval_on_selector_all("#results .card .badge:first-child", "els => els.map(e => e.textContent)")
    assert badges and set(badges) == {"Music"}
    page.locator("#results .card .info").first.click()
    page.wait_for_selector("#detail-dialog[open] .detail-path")
    path = page.inner_text("#detail-dialog .detail-path span")
    assert path.startswith(str(DEMO / "music"))
    assert "BPM" in page.inner_text("#detail-dialog .detail-meta")


def test_index_a_folder_from_the_page(page, live, expected_errors):
    expected_errors.append("status of 403")
    before = live.lib.stats()["items"]
    page.click("#open-index")
    page.wait_for_selector("#index-dialog[open]")
    page.fill("#index-path", str(live.allowed / "new"))
    page.click("#index-start")
    page.wait_for_selector("#jobs .job-state.done", timeout=120_000)
    assert "1 / 1 files" in page.inner_text("#jobs .job")
    assert live.lib.stats()["items"] == before + 1
    page.wait_for_function(f"() => document.querySelector('#stats').textContent.startsWith('{before + 1} files')")
    page.fill("#index-path", "/etc")
    page.click("#index-start")
    page.wait_for_selector("#index-error:not([hidden])")
    assert "outside the folders" in page.inner_text("#index-error")


@pytest.mark.parametrize(
    "name,viewport,scale",
    [("laptop", {"width": 1280, "height": 800}, 1), ("phone", {"width": 390, "height": 844}, 2)],
)
def test_screenshots(browser, live, shots, name, viewport, scale):
    for scheme in ("light", "dark"):
        ctx = browser.new_context(viewport=viewport, device_scale_factor=scale, color_scheme=scheme)
        pg = ctx.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        pg.goto(live.url + "/")
        pg.wait_for_function("() => document.querySelector('#stats').textContent.length > 0")
        pg.screenshot(path=str(shots / f"{name}-{scheme}-home.png"))
        _search(pg, "whale song")
        pg.wait_for_function("() => [...document.querySelectorAll('.wave img')].slice(0, 2).every(i => i.naturalWidth)")
        overflow = pg.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"page scrolls sideways at {viewport['width']} px"
        pg.wait_for_timeout(400)  # let the cards' entrance animation finish
        pg.screenshot(path=str(shots / f"{name}-{scheme}-results.png"))
        if scheme == "light":
            card = pg.locator("#results .card").nth(1)
            card.locator(".play").click()
            pg.wait_for_selector("#results .card.playing")
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(shots / f"{name}-playing.png"))
            card.locator(".play").click()
            card.locator(".info").click()
            pg.wait_for_selector("#detail-dialog[open] .detail-meta")
            pg.screenshot(path=str(shots / f"{name}-details.png"))
            pg.click("#detail-dialog [data-close]")
            pg.click("#filters-toggle")
            pg.screenshot(path=str(shots / f"{name}-filters.png"))
            pg.click("#open-index")
            pg.wait_for_selector("#index-dialog[open]")
            pg.screenshot(path=str(shots / f"{name}-index.png"))
        ctx.close()
    print(f"screenshots in {shots}")


def test_like_dislike_play_skip_and_for_you(page, live):
    """Issue 14: the like / dislike buttons and the player record events; "For you" recommends from them."""
    from soundscope.recommend import default_user

    user = default_user()  # the page has no accounts: the server's OS user
    cat = live.lib.store.catalog
    cat.delete_events(user)
    _search(page, "dog barking")
    first = page.locator("#results .card").first
    first.locator(".fb-like").click()
    page.locator("#results .card").nth(2).locator(".fb-dislike").click()
    third = page.locator("#results .card").nth(3)
    third.locator(".play").click()
    page.wait_for_selector("#results .card.playing")
    third.locator(".play").click()  # stopped at once: a skip
    deadline = time.monotonic() + 10
    while len(cat.events(user)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    kinds = sorted(e["kind"] for e in cat.events(user))
    assert kinds == ["dislike", "like", "skip"], kinds
    assert first.locator(".fb-like").get_attribute("aria-pressed") == "true"
    assert {e["query"] for e in cat.events(user)} == {"dog barking"}
    page.click("#for-you")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('Recommended for you')")
    page.wait_for_selector("#results .card:not(.skeleton)")
    why = page.locator("#results .card .why").first.inner_text()
    assert "because you liked" in why
    cat.delete_events(user)
