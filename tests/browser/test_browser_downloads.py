"""Each page's script download runs as a reader runs it: fetched through the page's link into an empty folder,
with the files the other links offer saved where the script's header says, and the models loaded from the
build's stand-ins (the ``HF_HUB_CACHE`` that ``qwen-docs standins`` prints). As many cells raise as the page
(its notebook download) shows raising: each prints its traceback and the script goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_docs_helpers.standins import offline_env

from .support import Crawl, Watched

if TYPE_CHECKING:
    from playwright.sync_api import Page

_TRACEBACK = "Traceback (most recent call last)"


def _fetch_as_a_reader(crawl: Crawl, page: Page, folder: Path) -> tuple[Path, int]:
    """The page's script and the files it reads, downloaded into ``folder`` as its links and header say, and how
    many errors the page's executed notebook shows."""
    links = page.eval_on_selector_all(".qd-downloads a.download", "links => links.map(a => [a.innerText, a.href])")
    (_, notebook_href), (script_name, script_href), *files = links
    notebook = json.loads(crawl.site.read(crawl.site.path_of(notebook_href) or notebook_href))
    errors = sum(output["output_type"] == "error" for cell in notebook["cells"] for output in cell.get("outputs", []))
    for name, href in [(script_name, script_href), *files]:
        served = crawl.site.path_of(href)
        assert served, f"{href} is not on the site"
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(crawl.site.read(served))
    return folder / script_name, errors


def _run(script: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **offline_env(), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, script.name], cwd=script.parent, env=env, capture_output=True, text=True,
                          timeout=900)


def test_every_script_download_runs_as_the_page_did(
    crawl: Crawl, new_context: Callable[..., Watched], tmp_path: Path
) -> None:
    page = new_context().new_page()
    scripts = []
    for facts in crawl.executed_pages:
        page.goto(crawl.site.page(facts.path))
        folder = tmp_path / facts.path.removesuffix(".html")
        folder.mkdir(parents=True)
        scripts.append(_fetch_as_a_reader(crawl, page, folder))
    with ThreadPoolExecutor(max_workers=2) as pool:  # a minute in all on two cores
        runs = list(pool.map(_run, [script for script, _ in scripts]))
    problems = []
    for (script, expected), run in zip(scripts, runs, strict=True):
        raised = run.stderr.count(_TRACEBACK)
        if run.returncode != 0 or raised != expected:
            problems.append(f"{script.name}: exit {run.returncode}, {raised} tracebacks where the page shows "
                            f"{expected} errors\n{run.stderr[-3000:]}")
        elif not run.stdout.strip():
            problems.append(f"{script.name}: printed nothing")
    assert not problems, "\n\n".join(problems)
