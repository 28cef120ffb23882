"""What a visitor does with the executed cells: pick a tab (synced across tab sets and pages, or from a
link), open dropdowns, press copy buttons."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from .support import Crawl, Served, Watched

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

# ---------------------------------------------------------------- tabs
# sphinx-design 0.8: a tab set is `.sd-tab-set > (input[type=radio] + label.sd-tab-label + .sd-tab-content)*`;
# synced labels carry data-sync-group / data-sync-id. Its JS checks every input of the same group and id
# on a change, keeps the choice in localStorage ("sphinx-design-tab-id-<group>", so other pages and tabs
# of the browser follow it), takes `?<group>=<id>` from the URL, and opens the panel holding `#fragment`.

_TAB_SETS = """() => [...document.querySelectorAll(".sd-tab-set")].map((set) => ({
    tabs: [...set.querySelectorAll(":scope > label")]
        .map((label) => ({id: label.dataset.syncId ?? null, text: label.textContent.trim()})),
    shown: [...set.querySelectorAll(":scope > .sd-tab-content")]
        .map((panel, index) => [index, getComputedStyle(panel).display !== "none"])
        .filter(([, shown]) => shown).map(([index]) => index),
}))"""
_FIRST_SYNCED_SET = """() => {
    const label = document.querySelector(".sd-tab-label[data-sync-group][data-sync-id]");
    const tabs = [...label.parentElement.querySelectorAll(":scope > label")]
        .map((l) => ({id: l.dataset.syncId ?? null, text: l.textContent.trim()}));
    return {group: label.dataset.syncGroup, tabs};
}"""
_IN_VIEW = """(id) => {
    const box = document.getElementById(id).getBoundingClientRect();
    return box.top >= 0 && box.top < window.innerHeight;
}"""

Tab = dict[str, Any]  # {"id": sync id or None, "text": label}
TabSet = dict[str, Any]  # {"tabs": [Tab, ...], "shown": [indices of the panels shown]}


def _tab_sets(page: Page) -> list[TabSet]:
    """Every tab set of the page (synced or not): its tabs, and which panels it shows."""
    return page.evaluate(_TAB_SETS)


def _unchosen(sets: list[TabSet], choice: Tab) -> bool:
    """Each tab set shows one panel, and not all of those with the choice show it (it is nobody's default)."""
    return bool(sets) and all(len(tab_set["shown"]) == 1 for tab_set in sets) and not _all_show(sets, choice)


def _all_show(sets: list[TabSet], choice: Tab, at_least: int = 1) -> bool:
    """Every tab set with the chosen tab (same sync id, or same label) shows it alone; ``at_least`` have it.

    Matching labels too makes a tab set that lost its sync attributes fail here, not go unnoticed.
    """
    having = 0
    for tab_set in sets:
        same = [choice["id"] == tab["id"] or choice["text"] == tab["text"] for tab in tab_set["tabs"]]
        matching = [index for index, is_same in enumerate(same) if is_same]
        if matching:
            having += 1
            if tab_set["shown"] != matching[:1]:
                return False
    return having >= at_least


def _choice(page: Page) -> tuple[str, Tab]:
    """(sync group, second tab) of the page's first synced tab set: a choice that is not the default."""
    first = page.evaluate(_FIRST_SYNCED_SET)
    assert len(first["tabs"]) >= 2, f"the first synced tab set has one tab only: {first}"
    return first["group"], first["tabs"][1]


def _choose(page: Page, group: str, choice: Tab) -> None:
    """Click the chosen tab's label in the first tab set that has it, as a visitor does."""
    page.locator(f'.sd-tab-label[data-sync-group="{group}"][data-sync-id="{choice["id"]}"]').first.click()


def _synced_pages(crawl: Crawl) -> list[str]:
    pages = [page.path for page in crawl.pages.values() if len(page.synced) >= 4]  # two sets of two tabs
    if not pages:
        pytest.fail("no page of the site has two synced tab sets")
    return pages


def test_every_tab_set_is_synced(crawl: Crawl) -> None:
    """The site promises that every tab set follows the reader's choice."""
    unsynced = [f"{page.path}: {labels}" for page in crawl.pages.values() for labels in page.unsynced]
    assert not unsynced, "tab sets lacking :sync-group: (on the set) or :sync: (on an item):\n" + "\n".join(unsynced)


def test_choosing_a_tab_switches_every_tab_set_of_the_page(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    watched = new_context()
    page = watched.new_page()
    for path in _synced_pages(crawl):
        page.goto(crawl.site.page(path))
        group, choice = _choice(page)
        before = _tab_sets(page)
        assert _unchosen(before, choice), f"{path}: {before}"
        _choose(page, group, choice)
        after = _tab_sets(page)
        assert _all_show(after, choice, at_least=2), f"{path}, after choosing {choice['text']!r}: {after}"
        page.evaluate("() => localStorage.clear()")  # the next page starts from its defaults
    assert not watched.errors, watched.errors


def test_the_choice_holds_on_the_next_page(
    synced_pages: tuple[Served, list[str]], new_context: Callable[..., Watched]
) -> None:
    served, (first, second) = synced_pages
    watched = new_context(served)
    page = watched.new_page()
    page.goto(served.page(second))
    group, choice = _choice(page)
    assert _unchosen(_tab_sets(page), choice), "nothing chosen yet"

    page.goto(served.page(first))
    _choose(page, group, choice)
    page.goto(served.page(second))
    assert _all_show(_tab_sets(page), choice), f"{second} after choosing {choice['text']!r} on {first}"
    another_tab = watched.new_page()  # the choice is the browser's, not the tab's (localStorage)
    another_tab.goto(served.page(first))
    assert _all_show(_tab_sets(another_tab), choice), f"{first} in another tab"
    assert not watched.errors, watched.errors


def test_a_link_can_choose_the_tab(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    path = _synced_pages(crawl)[0]
    probe = new_context().new_page()
    probe.goto(crawl.site.page(path))
    group, choice = _choice(probe)

    # ?<group>=<id>: every tab set of the group (and the choice is kept for the next pages)
    page = new_context().new_page()
    page.goto(crawl.site.page(f"{path}?{group}={choice['id']}"))
    assert _all_show(_tab_sets(page), choice, at_least=2)

    # #<id of a panel, or of anything in it>: that panel opens and is scrolled to
    target = probe.evaluate(
        """([group, choice]) => [...document.querySelectorAll(`label[data-sync-group="${group}"]`)]
            .filter((label) => label.dataset.syncId === choice)
            .map((label) => label.nextElementSibling.id).filter(Boolean).at(-1)""",
        [group, choice["id"]],
    )
    page = new_context().new_page()
    page.goto(crawl.site.page(f"{path}#{target}"))
    assert page.locator(f"#{target}").is_visible()  # panels of unchosen tabs are display: none
    page.wait_for_function(_IN_VIEW, arg=target, timeout=5000)  # furo scrolls smoothly


# ---------------------------------------------------------------- the page's cells and its notebook
# The page's cells are the notebook's rendered code cells in order (nested cells are hoisted in source
# order), but for the stamp cell, which the build moves under the title.

_REMOVED_CELL, _REMOVED_INPUT, _REMOVED_OUTPUT = ({f"remove-{x}", f"remove_{x}"} for x in ("cell", "input", "output"))
_CELLS = "div.cell:not(.tag_qd-stamp)"


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _rendered_cells(notebook: dict) -> list[dict]:
    """The notebook's code cells the page renders (input, output or both), stamp excepted, in page order."""
    rendered = []
    for cell in notebook["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or not _source(cell).strip() or "qd-stamp" in tags or tags & _REMOVED_CELL:
            continue
        if not (tags & _REMOVED_INPUT and tags & _REMOVED_OUTPUT):
            rendered.append(cell)
    return rendered


def _page_notebook_cells(page: Page, site: Served) -> list[dict]:
    """The notebook cells of the page, from its download link, matched to ``div.cell`` elements in order."""
    href = page.eval_on_selector(".qd-downloads a.download[href$='.ipynb']", "a => a.href")
    cells = _rendered_cells(json.loads(site.read(site.path_of(href))))
    shown = page.locator(_CELLS).count()
    assert shown == len(cells), f"{page.url}: {shown} cells shown, the notebook renders {len(cells)}"
    return cells


def _tags(cell: dict) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


# ---------------------------------------------------------------- dropdowns

_CELLS_IN = """(dropdown, selector) => [...document.querySelectorAll(selector)]
    .map((cell, index) => ({cell, index}))
    .filter(({cell}) => dropdown.contains(cell))
    .map(({cell, index}) => {
        const output = cell.querySelector(".cell_output");
        let expected = true;  // unless the page hides it on purpose: in a closed inner details or another tab
        for (let node = cell; node !== dropdown; node = node.parentElement) {
            if (node.tagName === "DETAILS" && !node.open) expected = false;
            const panel = node.classList.contains("sd-tab-content");
            if (panel && getComputedStyle(node).display === "none") expected = false;
        }
        const folded = output && output.closest("details") !== dropdown && !output.closest("details").open;
        return {index, expected: expected && !folded, output: !!output, visible: !!output && output.checkVisibility()};
    })"""


def test_every_dropdown_opens_and_shows_its_outputs(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    pages = [facts for facts in crawl.executed_pages if facts.dropdowns]
    if not pages:
        pytest.skip("no executed page has a dropdown")
    watched = new_context()
    page = watched.new_page()
    problems = []
    for facts in pages:
        page.goto(crawl.site.page(facts.path))
        notebook_cells = _page_notebook_cells(page, crawl.site)
        dropdowns = page.locator("details.sd-dropdown")
        for number in range(dropdowns.count()):
            dropdown = dropdowns.nth(number)
            summary = dropdown.locator("xpath=./summary")
            where = f"{facts.path}, dropdown {summary.inner_text().strip()!r}"
            if dropdown.get_attribute("open") is None:
                if any(cell["visible"] for cell in dropdown.evaluate(_CELLS_IN, _CELLS)):
                    problems.append(f"{where}: outputs visible while closed")
                summary.click()
            if not dropdown.evaluate("(d) => d.open") or not dropdown.locator(".sd-summary-content").first.is_visible():
                problems.append(f"{where}: does not open")
                continue
            for cell in dropdown.evaluate(_CELLS_IN, _CELLS):
                ran = notebook_cells[cell["index"]]
                if not ran.get("outputs") or _tags(ran) & _REMOVED_OUTPUT or not cell["expected"]:
                    continue
                if not (cell["output"] and cell["visible"]):
                    problems.append(f"{where}: the output of {_source(ran).splitlines()[0]!r} is not visible once open")
    assert not problems, "\n".join(problems)
    assert not watched.errors, watched.errors


# ---------------------------------------------------------------- copy buttons

_REVEAL = """(cell) => {  // open what hides the cell: dropdowns, folded inputs, other tabs
    for (let node = cell; node; node = node.parentElement) {
        if (node.tagName === "DETAILS") node.open = true;
        if (node.classList?.contains("sd-tab-content")) {
            node.previousElementSibling.previousElementSibling.checked = true;
        }
    }
}"""
_SENTINEL = "nothing was copied"


def _copy(page: Page, cell_input: Locator) -> str:
    cell_input.evaluate(_REVEAL)
    page.evaluate("(text) => navigator.clipboard.writeText(text)", _SENTINEL)
    cell_input.hover()
    cell_input.locator("button.copybtn").click()
    return page.evaluate("() => navigator.clipboard.readText()")


def test_copy_buttons_copy_exactly_the_cell_source(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    watched = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = watched.new_page()
    problems = []
    for facts in crawl.executed_pages:
        page.goto(crawl.site.page(facts.path))
        sources = [_source(cell) for cell in _page_notebook_cells(page, crawl.site) if not _tags(cell) & _REMOVED_INPUT]
        inputs = page.locator(f"{_CELLS} .cell_input")
        if inputs.count() != len(sources):
            problems.append(f"{facts.path}: {inputs.count()} cell inputs shown, the notebook has {len(sources)}")
            continue
        for number, source in enumerate(sources, start=1):
            copied = _copy(page, inputs.nth(number - 1))
            if copied != source.rstrip("\n"):
                problems.append(f"{facts.path}, cell {number}: copied {copied[:80]!r}, source {source[:80]!r}")
        outputs_with_button = page.locator(".cell_output button.copybtn").count()
        if outputs_with_button:
            problems.append(f"{facts.path}: {outputs_with_button} cell outputs have a copy button")
    assert not problems, "\n".join(problems)
    assert not watched.errors, watched.errors


# ---------------------------------------------------------------- print

_PRINTED = """() => {
    const clipped = (node) => {  // wider than the paper, or than a box around it that clips or scrolls
        const right = node.getBoundingClientRect().right;
        for (let box = node.parentElement; box; box = box.parentElement) {
            const clips = getComputedStyle(box).overflowX !== "visible" || box === document.documentElement;
            if (clips && right > box.getBoundingClientRect().right + 1) return true;
        }
        return false;
    };
    const hidden = (selector) => [...document.querySelectorAll(selector)].filter((node) => !node.checkVisibility());
    const label = (node) => node.closest(".sd-tab-content, details")?.previousElementSibling?.textContent.trim()
        ?? node.closest("details")?.querySelector("summary")?.textContent.trim();
    return {
        panels: hidden(".sd-tab-set > .sd-tab-content").map((panel) => `tab ${label(panel)}`),
        dropdowns: hidden("details.sd-dropdown > .sd-summary-content")
            .map((body) => `dropdown ${body.parentElement.querySelector("summary").textContent.trim()}`),
        cut: [...document.querySelectorAll(".cell_input pre")]
            .filter((pre) => pre.checkVisibility() && pre.scrollWidth > pre.clientWidth + 1)
            .map((pre) => `code cut at the margin: ${pre.textContent.split("\\n")[0]}`)
            .concat([...document.querySelectorAll("article table")]
                .filter((table) => table.checkVisibility() && clipped(table))
                .map((table) => `table cut at the margin: ${table.querySelector("th, td")?.textContent.trim()}`)),
        labels: [...document.querySelectorAll(".sd-tab-set > label")].filter((l) => !l.checkVisibility()).length,
    };
}"""


def test_printing_opens_the_dropdowns_where_css_cannot(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    """Browsers without ::details-content: qwen-docs.js opens the dropdowns for printing, then closes them again."""
    page = new_context().new_page()
    facts = next(facts for facts in crawl.executed_pages if facts.dropdowns)
    page.goto(crawl.site.page(facts.path))
    states = "() => [...document.querySelectorAll('details.sd-dropdown')].map((d) => d.open)"
    before = page.evaluate(states)
    assert not all(before), f"{facts.path}: every dropdown is open on loading"
    page.evaluate("() => window.dispatchEvent(new Event('beforeprint'))")
    assert all(page.evaluate(states)), f"{facts.path}: a dropdown stayed closed for printing"
    page.evaluate("() => window.dispatchEvent(new Event('afterprint'))")
    assert page.evaluate(states) == before, f"{facts.path}: the dropdowns were not closed again after printing"


def test_a_printed_page_holds_every_tab_and_dropdown(crawl: Crawl, new_context: Callable[..., Watched]) -> None:
    """On paper nothing can be clicked: every tab panel (under its label) and every dropdown prints, code wraps."""
    page = new_context(viewport={"width": 700, "height": 900}).new_page()
    page.emulate_media(media="print")
    problems = []
    for facts in crawl.executed_pages:
        page.goto(crawl.site.page(facts.path))
        printed = page.evaluate(_PRINTED)
        for kind in ("panels", "dropdowns", "cut"):
            problems += [f"{facts.path}: {what}" for what in printed[kind]]
        if printed["labels"]:
            problems.append(f"{facts.path}: {printed['labels']} tab labels do not print")
    assert not problems, "\n".join(problems)
