"""Every page of the built site, as a visitor's browser loads it: errors, links, stamp, downloads,
search, accessibility (axe-core), and phone-width layout (screenshots for a person to look at in
docs/_build/screenshots/)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urldefrag

from .support import SCREENSHOTS, Crawl, Watched, download_links

if TYPE_CHECKING:
    from playwright.sync_api import Page

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True}
_SEARCH_DONE = "() => /found|did not match/i.test(document.querySelector('#search-results')?.textContent ?? '')"


def test_the_crawl_reaches_the_executed_pages(crawl: Crawl) -> None:
    assert "index.html" in crawl.pages and crawl.executed_pages, sorted(crawl.pages)


def test_no_console_errors(crawl: Crawl) -> None:
    assert not crawl.errors, "\n".join(crawl.errors)


def test_pages_load_nothing_from_other_hosts(crawl: Crawl) -> None:
    assert not crawl.external, "the site should read offline; aborted:\n" + "\n".join(crawl.external)


def test_every_internal_link_resolves(crawl: Crawl) -> None:
    broken = [f"{path} (HTTP {status})" for path, status in crawl.resources.items() if status != 200]
    broken += [f"{page.path} (HTTP {page.status})" for page in crawl.pages.values() if page.status != 200]
    assert not broken, "\n".join(broken)


def test_every_link_fragment_exists(crawl: Crawl) -> None:
    missing = []
    for page in crawl.pages.values():
        for link in page.links:
            url, fragment = urldefrag(link)
            target = crawl.site.path_of(url)
            if not fragment or target is None or target not in crawl.pages:
                continue
            if fragment not in crawl.pages[target].ids:
                missing.append(f"{page.path} -> {target}#{fragment}")
    assert not missing, "\n".join(sorted(set(missing)))


#: Whether the element with this id, and every dropdown around it, is open, and the element is in the window.
_OPEN_AND_IN_VIEW = """(id) => {
    const target = document.getElementById(id), box = target.getBoundingClientRect();
    const closed = [...document.querySelectorAll("details:not([open])")].some((d) => d.contains(target));  // or is it
    return !closed && box.height > 0 && box.bottom > 0 && box.top < innerHeight;
}"""
_WHERE_IT_IS = """(id) => {
    const target = document.getElementById(id), box = target.getBoundingClientRect();
    return `open ${target.closest("details")?.open}, top ${box.top} of a ${innerHeight}-pixel window`;
}"""


def test_a_link_into_a_dropdown_opens_it(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    """Every link whose fragment is a dropdown, or inside one, shows it open and in view: when the page loads at
    that fragment, and when the fragment changes on a page already open (qwen-docs.js)."""
    links = set()
    for page_facts in crawl.pages.values():
        for link in page_facts.links:
            url, fragment = urldefrag(link)
            target = crawl.site.path_of(url)
            if fragment and target in crawl.pages and fragment in crawl.pages[target].in_dropdowns:
                links.add((target, fragment))
    assert links, "no link into a dropdown: efficiency.md links its offload dropdown"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page, closed = new_context(viewport=DESKTOP).new_page(), []
    for path, fragment in sorted(links):
        for how, before in (("loaded", "about:blank"), ("hash changed", crawl.site.page(path))):
            page.goto(before)
            page.goto(crawl.site.page(path) + "#" + fragment)
            try:
                page.wait_for_function(_OPEN_AND_IN_VIEW, arg=fragment, timeout=5_000)
            except PlaywrightTimeout:
                closed.append(f"{path}#{fragment} ({how}): {page.evaluate(_WHERE_IT_IS, fragment)}")
    assert not closed, "\n".join(closed)


def test_stamp_notice_and_downloads_are_under_the_title(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    page = new_context(viewport=DESKTOP).new_page()
    problems = []
    for facts in crawl.executed_pages:
        page.goto(crawl.site.page(facts.path))
        stamp, notice = page.locator(".admonition.qd-stamp"), page.locator(".qd-standin-notice")
        downloads = page.locator(".qd-downloads")
        if stamp.count() != 1 or not stamp.is_visible():
            problems.append(f"{facts.path}: no visible 'executed on' stamp")
            continue
        # the stamp cell comes right after the title, and the stamp is on the first screen
        if not page.evaluate("() => !!document.querySelector('h1').nextElementSibling.querySelector('.qd-stamp')"):
            problems.append(f"{facts.path}: the stamp is not right under the title")
        if stamp.bounding_box()["y"] > DESKTOP["height"]:
            problems.append(f"{facts.path}: the stamp is below the first screen")
        standin = "stand-in" in stamp.inner_text()
        if standin and not (notice.count() == 1 and notice.is_visible()):
            problems.append(f"{facts.path}: ran on stand-ins but shows no stand-in notice")
        if not standin and notice.count():
            problems.append(f"{facts.path}: ran on real weights but shows the stand-in notice")
        if downloads.count() != 1 or not downloads.is_visible():
            problems.append(f"{facts.path}: no visible download links")
        page.screenshot(path=SCREENSHOTS / f"desktop-{_shot_name(facts.path)}.png")
    assert not problems, "\n".join(problems)


def test_download_links_give_the_notebook_and_the_script(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    page = new_context().new_page()
    for facts in crawl.executed_pages:
        page.goto(crawl.site.page(facts.path))
        links = download_links(page)
        hrefs = [href for _, href in links]
        by_suffix = {href.rsplit(".", 1)[-1]: crawl.site.path_of(href) for href in hrefs[:2]}
        assert list(by_suffix) == ["ipynb", "py"], f"{facts.path}: download links {hrefs}"
        notebook = json.loads(crawl.site.read(by_suffix["ipynb"]))
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        assert code and all(cell["execution_count"] for cell in code if cell["outputs"]), facts.path
        assert any(cell["outputs"] for cell in code), f"{facts.path}: the notebook has no outputs"
        script = crawl.site.read(by_suffix["py"]).decode()
        compile(script, by_suffix["py"], "exec")  # plain Python
        assert script.startswith(f"# {facts.title}"), facts.path
        header, _, body = script.partition("\n# %%")
        if '"Qwen/' in body:  # it loads models, and runs every tab: it says what memory that takes
            assert re.search(r"^# Memory: .* \d+\.\d GB", header, re.M | re.S), f"{facts.path}: {header}"
            assert "how much memory" in page.locator(".qd-downloads").inner_text(), facts.path
        # any further link is a file the code reads: the script's header names it, and the link serves it
        files = links[2:]
        files_line = " ".join(line.strip("# ") for line in header.splitlines() if line.startswith("#"))
        for name, href in files:
            assert f"reads {name}" in files_line or f", {name}" in files_line, f"{facts.path}: {name} {header}"
            served = crawl.site.path_of(href)
            assert served and crawl.site.read(served), f"{facts.path}: {href} serves nothing"
        if "Files: the code reads" in header:
            assert files, f"{facts.path}: the script names files the page's links do not offer"


def test_search_finds_each_page_by_a_word_of_its_title(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = new_context().new_page()
    missed = []
    for facts in crawl.content_pages:
        words = sorted(re.findall(r"[A-Za-z]{4,}", facts.title), key=len, reverse=True)
        if not words:
            continue
        page.goto(crawl.site.page(f"search.html?q={words[0].lower()}"))
        try:
            page.wait_for_function(_SEARCH_DONE, timeout=10_000)
        except PlaywrightTimeout:
            missed.append(f"searching {words[0]!r} did not finish")
            break  # the search itself is broken: one timeout says it
        found = page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
        if facts.path not in {crawl.site.path_of(urldefrag(href).url) for href in found}:
            missed.append(f"{words[0]!r} does not find {facts.path}")
    assert not missed, "\n".join(missed)


# Elements reaching past the right edge of a 375 px screen. Allowed: what the reader can scroll sideways
# inside the article (code blocks, outputs, wide tables), and fixed overlays (furo's closed drawers).
# Not allowed: anything that makes the page itself scroll sideways (furo's content column would).
_OVERFLOW = """() => {
    const width = document.documentElement.clientWidth;
    const article = document.querySelector("article") ?? document.body;
    const exempt = (el) => {
        for (let node = el; node && node !== document.documentElement; node = node.parentElement) {
            const style = getComputedStyle(node);
            if (style.position === "fixed") return true;
            const scroller = ["auto", "scroll"].includes(style.overflowX);
            if (scroller && node !== el && node !== article && article.contains(node)) return true;
        }
        return false;
    };
    const found = [];
    for (const el of document.body.querySelectorAll("*")) {
        const box = el.getBoundingClientRect();
        const shown = box.width && box.height && getComputedStyle(el).visibility !== "hidden";
        if (shown && box.right > width + 1 && !exempt(el)) {
            found.push(`<${el.tagName.toLowerCase()} class="${el.className}"> reaches ${Math.round(box.right)}px: `
                + (el.textContent || "").trim().slice(0, 60));
        }
    }
    return {width, found: found.slice(0, 10)};
}"""


#: The top of a page a phone screenshot keeps. A full-page capture at phone width (pages reach 45,000 px there, the
#: helpers page) failed once in CI with "Unable to capture screenshot"; 16,384 px is Chromium's usual texture limit.
_PHONE_SHOT_HEIGHT = 16_384


def _phone_shot(page: Page, path: Path) -> None:
    """The top of the page, up to ``_PHONE_SHOT_HEIGHT``: the viewport is stretched to that height for one plain
    screenshot. Chromium 156.0.8078.79 never finishes a ``full_page`` screenshot of the Qwen2 page in mobile
    emulation (30 s timeout, every time; the page's other checks pass), with or without a clip."""
    height = min(page.evaluate("document.documentElement.scrollHeight"), _PHONE_SHOT_HEIGHT)
    page.set_viewport_size({"width": PHONE["viewport"]["width"], "height": height})
    try:
        page.screenshot(path=path)
    finally:
        page.set_viewport_size(PHONE["viewport"])


def test_pages_fit_a_phone_screen(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    page = new_context(**PHONE).new_page()
    overflowing = {}
    for facts in crawl.content_pages:
        page.goto(crawl.site.page(facts.path))
        result = page.evaluate(_OVERFLOW)
        assert result["width"] == PHONE["viewport"]["width"]
        if result["found"]:
            overflowing[facts.path] = result["found"]
        _phone_shot(page, SCREENSHOTS / f"phone-{_shot_name(facts.path)}.png")
    assert not overflowing, "\n".join(f"{path}: {found}" for path, found in overflowing.items())


_OPEN_DROPDOWNS = "() => document.querySelectorAll('details.sd-dropdown').forEach((d) => { d.open = true; })"
_NEXT_FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
_UNREACHABLE_SCROLLERS = r"""() => {
    // axe-core's scrollable-region-focusable: a box that scrolls must take the focus or hold something that does
    const scrolls = (el) => {
        const style = getComputedStyle(el);
        const x = /auto|scroll/.test(style.overflowX) && el.scrollWidth > el.clientWidth + 1;
        const y = /auto|scroll/.test(style.overflowY) && el.scrollHeight > el.clientHeight + 1;
        return (x || y) && el.checkVisibility();
    };
    const focusable = "a[href], button, input, select, textarea, [tabindex]:not([tabindex='-1'])";
    return [...document.querySelectorAll("article *")]
        .filter((el) => scrolls(el) && el.tabIndex < 0 && !el.querySelector(focusable))
        .map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join(".")}: `
            + el.textContent.replace(/\s+/g, " ").trim().slice(0, 50));
}"""


def test_what_scrolls_can_be_scrolled_from_the_keyboard(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    """Code past the right edge and capped outputs take the focus, in every tab and open dropdown."""
    problems = []
    for viewport in (DESKTOP, PHONE["viewport"]):
        page = new_context(viewport=viewport).new_page()
        for facts in crawl.executed_pages:
            page.goto(crawl.site.page(facts.path))
            page.evaluate(_OPEN_DROPDOWNS)  # their blocks measure 0 while closed, then get their size
            labels = page.locator(".sd-tab-set > label")
            for choice in [None, *range(labels.count())]:
                if choice is not None:
                    if not labels.nth(choice).is_visible():
                        continue
                    labels.nth(choice).click()
                page.evaluate(_NEXT_FRAMES)  # ResizeObserver callbacks run between layout and paint
                where = f"{facts.path} at {viewport['width']} px" + ("" if choice is None else f", tab {choice}")
                problems += [f"{where}: {box}" for box in page.evaluate(_UNREACHABLE_SCROLLERS)]
    assert not problems, "\n".join(sorted(set(problems)))


#: Every tab set shows its last tab (Pipeline); sphinx-design's tabs are radio buttons, so this is what a click does.
_LAST_TABS = """() => document.querySelectorAll(".sd-tab-set").forEach((set) => {
    const inputs = set.querySelectorAll(":scope > input");
    if (inputs.length) inputs[inputs.length - 1].checked = true;
})"""
#: Scroll down, then a little up: furo shows its back-to-top link, which otherwise is not displayed.
_SHOW_BACK_TO_TOP = """async () => {
    window.scrollTo(0, document.body.scrollHeight);
    await new Promise((done) => setTimeout(done, 100));
    window.scrollBy(0, -200);
    await new Promise((done) => setTimeout(done, 300));
}"""


def test_every_page_passes_axe_core(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    """axe-core's WCAG and best-practice rules on every page, dropdowns open: all of them on a desktop, and its
    colour contrast in the dark theme too; the rest also with the last tab of every tab set shown, on a phone, and with
    the back-to-top link showing; and the search page with results. (Colour contrast takes most of axe's time, about
    5 s on a long page, and only the theme changes colours.)"""
    from axe_playwright_python.sync_playwright import Axe

    axe, problems = Axe(), []
    everything = {"resultTypes": ["violations"]}
    contrast = {"resultTypes": ["violations"], "runOnly": ["color-contrast"]}
    layout = {"resultTypes": ["violations"], "rules": {"color-contrast": {"enabled": False}}}

    def check(page: Page, where: str, options: dict[str, object]) -> None:
        for violation in axe.run(page, options=options).response["violations"]:
            targets = ", ".join(str(node["target"]) for node in violation["nodes"][:3])
            problems.append(f"{where}: {violation['id']} ({violation['impact']}): {violation['help']}: {targets}")

    def open_page(page: Page, path: str) -> None:
        page.goto(crawl.site.page(path))
        page.evaluate(_OPEN_DROPDOWNS)
        page.evaluate(_NEXT_FRAMES)

    light = new_context(viewport=DESKTOP).new_page()
    dark = new_context(viewport=DESKTOP, color_scheme="dark").new_page()  # furo follows the system's theme
    phone = new_context(**PHONE).new_page()
    back_to_top_shown = 0
    for facts in crawl.pages.values():
        open_page(light, facts.path)
        check(light, facts.path, everything)
        if facts.synced or facts.unsynced:
            light.evaluate(_LAST_TABS)
            light.evaluate(_NEXT_FRAMES)  # qwen-docs.js gives the blocks now shown their tab stops on resize
            check(light, f"{facts.path} (last tabs)", layout)
        light.evaluate(_SHOW_BACK_TO_TOP)
        if light.locator(".back-to-top").is_visible():
            back_to_top_shown += 1
            check(light, f"{facts.path} (back-to-top shown)", layout)
        open_page(dark, facts.path)
        check(dark, f"{facts.path} (dark theme)", contrast)
        open_page(phone, facts.path)
        check(phone, f"{facts.path} (phone)", layout)
    for page, options in ((light, everything), (dark, contrast)):
        page.goto(crawl.site.page("search.html?q=qwen2"))
        page.wait_for_function(_SEARCH_DONE, timeout=10_000)
        check(page, "search.html?q=qwen2", options)
    backgrounds = {page.evaluate("() => getComputedStyle(document.body).backgroundColor") for page in (light, dark)}
    assert len(backgrounds) == 2, f"the dark theme did not apply: {backgrounds}"
    assert back_to_top_shown, "no page showed furo's back-to-top link after a scroll: the state was never checked"
    assert not problems, "\n".join(problems)


def _shot_name(path: str) -> str:
    return path.removesuffix(".html").replace("/", "__")
