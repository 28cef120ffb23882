"""What the browser tests share: serving a folder, watching a browser context, crawling the site, and a
two-page fixture site with synced tab sets. The fixtures that use these are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urljoin, urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("QWEN_DOCS_SITE") or ROOT / "docs" / "_build" / "html").resolve()
SCREENSHOTS = Path(os.environ.get("QWEN_DOCS_SCREENSHOTS") or ROOT / "docs" / "_build" / "screenshots").resolve()
REQUIRE = os.environ.get("QWEN_DOCS_REQUIRE_SITE", "") not in ("", "0")
#: Use the two-page fixture site for the cross-page tab test even where the site has two synced pages.
FORCE_TAB_FIXTURE = os.environ.get("QWEN_DOCS_TABS_FIXTURE", "") not in ("", "0")
CHROMIUM = os.environ.get("QWEN_DOCS_CHROMIUM") or "/usr/bin/chromium"
#: Headless and offline: no sandbox (CI runs as root), no background connections to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Pages Sphinx generates: crawled and checked for errors and links, but no content pages.
GENERATED_PAGES = frozenset({"genindex.html", "search.html", "py-modindex.html"})
MAX_PAGES = 500


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail where the site is required (CI)."""
    if REQUIRE:
        pytest.fail(f"{reason} (QWEN_DOCS_REQUIRE_SITE is set: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- serving


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Served:
    """A folder served over HTTP on 127.0.0.1."""

    root: Path
    url: str  #: ends with "/"

    def page(self, path: str) -> str:
        return urljoin(self.url, path)

    def path_of(self, url: str) -> str | None:
        """Site path of a same-site URL, without query or fragment (``chat.html``); None for other hosts."""
        if not url.startswith(self.url):
            return None
        path = urlsplit(url).path[len(urlsplit(self.url).path) :]
        return path + "index.html" if path == "" or path.endswith("/") else path

    def status(self, path: str) -> int:
        request = urllib.request.Request(self.page(path), method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def read(self, path: str) -> bytes:
        with urllib.request.urlopen(self.page(path), timeout=10) as response:
            return response.read()


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Served]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name=f"http {root.name}", daemon=True)
    thread.start()
    try:
        yield Served(root, f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def download_links(page: Page) -> list[tuple[str, str]]:
    """The links under a page's stamp, as (text, href): the notebook, the script, then any file the code reads."""
    links = page.eval_on_selector_all(".qd-downloads a.download", "links => links.map(a => [a.innerText, a.href])")
    return [(text, href) for text, href in links]


# ---------------------------------------------------------------- watching a browser context


@dataclass
class Watched:
    """A browser context whose pages report what went wrong on them."""

    context: BrowserContext
    errors: list[str] = field(default_factory=list)  #: console errors, uncaught exceptions, HTTP errors
    external: list[str] = field(default_factory=list)  #: requests for other hosts (aborted)

    def new_page(self) -> Page:
        return self.context.new_page()


def watch(context: BrowserContext, served: Served) -> Watched:
    """Record console errors, uncaught exceptions and HTTP errors; abort (and record) other hosts."""
    watched = Watched(context)

    def on_page(page: Page) -> None:
        def on_console(message: Any) -> None:
            if message.type == "error" and message.location.get("url") not in watched.external:
                watched.errors.append(f"console error on {page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: watched.errors.append(f"uncaught exception on {page.url}: {error}"))
        page.on("response", lambda r: r.status >= 400 and watched.errors.append(f"HTTP {r.status} for {r.url}"))

    def abort_external(route: Any) -> None:
        watched.external.append(route.request.url)
        route.abort()

    context.on("page", on_page)
    context.route(re.compile(rf"^(?!{re.escape(served.url)})"), abort_external)
    return watched


# ---------------------------------------------------------------- crawling

_PAGE_FACTS = """() => ({
    title: (document.querySelector("h1")?.textContent ?? "").replace("\\u00b6", "").trim(),
    links: [...document.querySelectorAll("a[href], link[href]")].map((a) => a.href),
    ids: [...document.querySelectorAll("[id]")].map((e) => e.id)
        .concat([...document.querySelectorAll("a[name]")].map((a) => a.name)),
    cells: document.querySelectorAll("div.cell").length,
    synced: [...document.querySelectorAll(".sd-tab-label[data-sync-group][data-sync-id]")]
        .map((label) => label.dataset.syncGroup),
    unsynced: [...document.querySelectorAll(".sd-tab-set")]
        .filter((set) => set.querySelector(":scope > label:not([data-sync-group]), :scope > label:not([data-sync-id])"))
        .map((set) => [...set.querySelectorAll(":scope > label")].map((label) => label.textContent.trim()).join(" | ")),
    dropdowns: document.querySelectorAll("details.sd-dropdown").length,
    in_dropdowns: [...document.querySelectorAll("details.sd-dropdown[id], details.sd-dropdown [id]")].map((e) => e.id),
})"""


@dataclass
class PageFacts:
    path: str
    status: int
    title: str
    links: list[str]
    ids: set[str]
    cells: int
    synced: list[str]  #: the sync group of each synced tab label
    unsynced: list[str]  #: the labels of each tab set that is not synced
    dropdowns: int
    in_dropdowns: set[str]  #: the ids of dropdowns and of what is inside them


@dataclass
class Crawl:
    """Every page reachable from the index, as the browser saw it."""

    site: Served
    pages: dict[str, PageFacts]
    resources: dict[str, int]  #: linked same-site files that are no page -> HTTP status
    errors: list[str]
    external: list[str]

    @property
    def content_pages(self) -> list[PageFacts]:
        return [page for path, page in self.pages.items() if path not in GENERATED_PAGES]

    @property
    def executed_pages(self) -> list[PageFacts]:
        """Pages with notebook cells (each has at least its stamp cell)."""
        return [page for page in self.pages.values() if page.cells]


def crawl_site(browser: Browser, site: Served) -> Crawl:
    """Load every page reachable from the index (links followed breadth first), once, in one tab."""
    watched = watch(browser.new_context(), site)
    page = watched.new_page()
    pages: dict[str, PageFacts] = {}
    resources: dict[str, int] = {}
    queue, seen = deque(["index.html"]), {"index.html"}
    while queue and len(pages) < MAX_PAGES:
        path = queue.popleft()
        response = page.goto(site.page(path))
        facts = page.evaluate(_PAGE_FACTS) if response and response.ok else {}
        pages[path] = PageFacts(
            path=path,
            status=response.status if response else 0,
            title=facts.get("title", ""),
            links=facts.get("links", []),
            ids=set(facts.get("ids", [])),
            cells=facts.get("cells", 0),
            synced=facts.get("synced", []),
            unsynced=facts.get("unsynced", []),
            dropdowns=facts.get("dropdowns", 0),
            in_dropdowns=set(facts.get("in_dropdowns", [])),
        )
        for link in pages[path].links:
            target = site.path_of(link)
            if target is None or target in seen or target in resources:
                continue
            if target.endswith(".html"):
                seen.add(target)
                queue.append(target)
            else:
                resources[target] = site.status(target)
    watched.context.close()
    return Crawl(site, pages, resources, watched.errors, watched.external)


# ---------------------------------------------------------------- a two-page site with synced tab sets

_FIXTURE_CONF = """\
extensions = ["myst_nb", "sphinx_design", "sphinx_copybutton"]
myst_enable_extensions = ["colon_fence"]
nb_execution_mode = "off"
html_theme = "furo"
"""
_FIXTURE_PAGE = """\
# Page {name}

::::{{tab-set}}
:sync-group: interface

:::{{tab-item}} Manual
:sync: manual
Manual, first set of page {name}.
:::
:::{{tab-item}} Pipeline
:sync: pipeline
Pipeline, first set of page {name}.
:::
::::

Between the sets.

::::{{tab-set}}
:sync-group: interface

:::{{tab-item}} Manual
:sync: manual
Manual, second set of page {name}.
:::
:::{{tab-item}} Pipeline
:sync: pipeline
Pipeline, second set of page {name}.
:::
::::
"""


def build_tab_fixture(folder: Path) -> Path:
    """A two-page site whose tab sets share a sync group, built with the site's theme and extensions."""
    from sphinx.cmd.build import build_main

    source = folder / "source"
    source.mkdir()
    (source / "conf.py").write_text(_FIXTURE_CONF)
    (source / "index.md").write_text("# Tabs\n\n```{toctree}\none\ntwo\n```\n")
    for name in ("one", "two"):
        (source / f"{name}.md").write_text(_FIXTURE_PAGE.format(name=name))
    out = folder / "html"
    if build_main(["-q", "-W", "-b", "html", "-d", str(folder / "doctrees"), str(source), str(out)]) != 0:
        pytest.fail("the tab fixture site did not build")
    return out
