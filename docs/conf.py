"""Sphinx configuration of qwen-docs: every Python block on the site is executed by myst-nb."""

from __future__ import annotations

from pathlib import Path

from qwen_docs_helpers.sitebuild import cell_timeout, execution_mode  # QWEN_DOCS_*: one-line errors when bad
from qwen_docs_helpers.speed import results_dir  # where the speed page reads benchmark results

DOCS = Path(__file__).parent

project = "qwen-docs"
author = "qwen-docs contributors"
copyright = "2026, qwen-docs contributors"

extensions = [
    "myst_nb",
    "sphinx_design",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "qwen_docs_helpers.sphinx",
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# No dollarmath: MathJax would load from a CDN, and the site must read offline (tests/browser checks it).
myst_enable_extensions = ["colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3

# Execution: only pages whose code changed re-run; a failing cell or any warning fails the build.
nb_execution_mode = execution_mode()  # QWEN_DOCS_EXECUTION
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
# Files cells read: a change re-executes the pages (new benchmark results reach the speed page).
qwen_docs_data_files = ["data/**/*", str(results_dir() / "*.json")]
nb_execution_timeout = cell_timeout()  # QWEN_DOCS_CELL_TIMEOUT
nb_execution_raise_on_error = False  # keep going: qwen_docs_helpers names each failed cell with its line
nb_execution_show_tb = False
nb_merge_streams = True
nb_scroll_outputs = True  # long (stand-in) outputs scroll instead of stretching the page
nb_output_stderr = "show"  # rendered, and then
qwen_docs_stderr = "warn"  # stray stderr (progress bars, log noise) fails the -W build, at the cell's line
nb_render_markdown_format = "myst"
nb_render_plugin = "qwen_docs"  # error outputs: the error line first, frames folded (sphinx/error_outputs.py)

html_theme = "furo"
html_title = "qwen-docs"
html_static_path = ["_static"]
html_css_files = ["qwen-docs.css"]
html_js_files = [("qwen-docs.js", {"defer": "defer"})]  # keyboard access, printing dropdowns, ARIA fixes
templates_path = ["_templates"]  # search.html: a heading for the search page

# Copy only code: inputs and plain code blocks, never cell outputs or prompts.
copybutton_selector = "div:not(.output) > div.highlight pre"
copybutton_exclude = ".linenos, .gp, .go"

autodoc_typehints = "description"
autodoc_member_order = "bysource"
intersphinx_mapping: dict[str, tuple[str, None]] = {}
