"""The built site in a real browser: Debian's Chromium driven by Playwright, the pages served over HTTP.

The site under test is ``docs/_build/html`` (``$QWEN_DOCS_SITE`` overrides it), served by a thread of
``http.server`` on a free port of 127.0.0.1. Without a built site, Playwright or Chromium the tests skip,
saying which is missing; with ``QWEN_DOCS_REQUIRE_SITE=1`` (the ``browser`` nox session, so CI) they fail.

Chromium is the system one (``/usr/bin/chromium``, or ``$QWEN_DOCS_CHROMIUM``), started with flags that
keep it offline; Playwright's own browser downloads are never used. Requests for any other host are
aborted and recorded, so a page that needs the network is reported as such, not as a flaky load.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FORCE_TAB_FIXTURE,
    SCREENSHOTS,
    SITE,
    Crawl,
    Served,
    Watched,
    build_tab_fixture,
    crawl_site,
    serve,
    unavailable,
    watch,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def site() -> Iterator[Served]:
    """The built site, served."""
    if not (SITE / "index.html").is_file():
        unavailable(f"no built site at {SITE}: build it first (nox -s docs)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with serve(SITE) as served:
        yield served


@pytest.fixture(scope="session")
def browser(site: Served) -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright; no 'playwright install' needed)")
    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not executable:
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set QWEN_DOCS_CHROMIUM)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def new_context(browser: Browser, site: Served) -> Iterator[Callable[..., Watched]]:
    """Make fresh browser contexts (own storage, own clipboard): ``new_context(served=site, **options)``."""
    made: list[Watched] = []

    def make(served: Served = site, **options: Any) -> Watched:
        made.append(watch(browser.new_context(**options), served))
        return made[-1]

    yield make
    for watched in made:
        watched.context.close()


@pytest.fixture(scope="session")
def crawl(browser: Browser, site: Served) -> Crawl:
    """Every page reachable from the index, loaded once."""
    return crawl_site(browser, site)


@pytest.fixture(scope="session")
def synced_pages(crawl: Crawl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, list[str]]]:
    """Two pages whose tab sets share a sync group: the site's where it has them, else a fixture site's."""
    by_group: defaultdict[str, list[str]] = defaultdict(list)
    for page in crawl.pages.values():
        for group in dict.fromkeys(page.synced):
            by_group[group].append(page.path)
    pair = next((paths[:2] for paths in by_group.values() if len(paths) >= 2), None)
    if pair and not FORCE_TAB_FIXTURE:
        yield crawl.site, pair
        return
    with serve(build_tab_fixture(tmp_path_factory.mktemp("tab-fixture"))) as served:
        yield served, ["one.html", "two.html"]
