"""Each page's downloads run as a reader runs them: fetched through the page's links into an empty folder,
with the files the other links offer saved where the script's header says, and the models loaded from the
build's stand-ins (the ``HF_HUB_CACHE`` that ``qwen-docs standins`` prints). As many cells raise as the page
(its notebook download) shows raising: the script prints each traceback and goes on; the notebook, run by
``jupyter execute`` as it was downloaded, stops at no cell but those tagged ``raises-exception``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from myst_nb.core.render import strip_ansi

from qwen_docs_helpers.standins import offline_env

from .support import Crawl, download_links, watch

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

_TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Fetched:
    """One page's downloads, saved as a reader saves them."""

    folder: Path
    notebook: str
    script: str
    errors: int  #: error outputs in the notebook the page offers (what its build ran into)

    def copied_to(self, parent: Path) -> Path:
        """A copy of the folder of its own: the script and the notebook each run in an untouched one."""
        return Path(shutil.copytree(self.folder, parent / self.folder.name))


def _fetch_as_a_reader(crawl: Crawl, page: Page, folder: Path) -> Fetched:
    """The page's notebook, script and the files they read, downloaded into ``folder`` as its links say."""
    links = download_links(page)
    for name, href in links:
        served = crawl.site.path_of(href)
        assert served, f"{href} is not on the site"
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(crawl.site.read(served))
    (notebook, _), (script, _), *_ = links
    return Fetched(folder, notebook, script, _errors(json.loads((folder / notebook).read_text())))


def _errors(notebook: dict[str, Any]) -> int:
    return sum(output["output_type"] == "error" for cell in notebook["cells"] for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def fetched(crawl: Crawl, browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Fetched]]:
    """Every executed page's downloads, fetched once for the tests that run them."""
    watched = watch(browser.new_context(), crawl.site)
    page = watched.new_page()
    downloads = []
    for facts in crawl.executed_pages:
        page.goto(crawl.site.page(facts.path))
        folder = tmp_path_factory.mktemp("fetched") / facts.path.removesuffix(".html")
        folder.mkdir(parents=True)
        downloads.append(_fetch_as_a_reader(crawl, page, folder))
    yield downloads
    watched.context.close()


#: Downloads run side by side, each with its share of the cores (as the site build runs its pages): torch's
#: threads of two runs that each take every core make them slower than one at a time.
_SIDE_BY_SIDE = 2


def _run(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    threads = str(max(1, (os.cpu_count() or 1) // _SIDE_BY_SIDE))
    env = {"OMP_NUM_THREADS": threads, **os.environ, **offline_env(), "MPLBACKEND": "Agg"}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)


def _run_all(commands: list[tuple[list[str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=_SIDE_BY_SIDE) as pool:
        return list(pool.map(lambda command: _run(*command), commands))


def test_every_script_download_runs_as_the_page_did(fetched: list[Fetched], tmp_path: Path) -> None:
    runs = _run_all([([sys.executable, download.script], download.copied_to(tmp_path)) for download in fetched])
    problems = []
    for download, run in zip(fetched, runs, strict=True):
        raised = run.stderr.count(_TRACEBACK)
        if run.returncode != 0 or raised != download.errors:
            problems.append(f"{download.script}: exit {run.returncode}, {raised} tracebacks where the page shows "
                            f"{download.errors} errors\n{run.stderr[-3000:]}")
        elif not run.stdout.strip():
            problems.append(f"{download.script}: printed nothing")
    assert not problems, "\n\n".join(problems)


def _without_outputs(path: Path) -> None:
    """Clear the stored outputs, so that every output checked afterwards comes from the test's run."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(notebook, path)


def test_every_notebook_download_runs_as_the_page_did(fetched: list[Fetched], tmp_path: Path) -> None:
    folders = [download.copied_to(tmp_path) for download in fetched]
    jupyter_execute = str(Path(sys.executable).with_name("jupyter-execute"))  # what `jupyter execute` runs
    commands = []
    for download, folder in zip(fetched, folders, strict=True):
        _without_outputs(folder / download.notebook)
        commands.append(([jupyter_execute, download.notebook, "--output", "ran.ipynb"], folder))
    problems = []
    for download, folder, run in zip(fetched, folders, _run_all(commands), strict=True):
        ran = folder / "ran.ipynb"
        raised = _errors(json.loads(ran.read_text())) if ran.is_file() else None
        if run.returncode != 0 or raised != download.errors:
            problems.append(f"{download.notebook}: exit {run.returncode}, {raised} errors where the page shows "
                            f"{download.errors}\n{strip_ansi(run.stderr)[-3000:]}")  # the kernel's colours
    assert not problems, "\n\n".join(problems)
