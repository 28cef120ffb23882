"""Error outputs a reader can read: the error line first, the frames folded; a skipped cell as a notice.

myst-nb renders an error output as its whole traceback in one scrolled box, so on the pages that show an
error on purpose (the ``ImportError`` of a missing flash-attn, the bitsandbytes ``AssertionError``) the
line that matters sits below hundreds of lines of library frames, out of view. This renderer (myst-nb's
``nb_render_plugin = "qwen_docs"``, registered as a ``myst_nb.renderers`` entry point) shows the
``Name: message`` line from the output's own ``ename`` and ``evalue``, with the full traceback folded
under it. A cell that :func:`~qwen_docs_helpers.requirements.require` skipped shows its notice as a note,
not as a failure. Nothing is rewritten: both come from the fields the kernel sent.

Being the one object of ours that myst-nb creates between reading a page and rendering it, the renderer
also gives the page's tokens the lines of the file (:func:`.nested_cells.map_lines_back`). The extension
makes it the renderer of a site that names none; a site that names one, ``"default"`` included, keeps it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from docutils import nodes
from myst_nb.core.render import NbElementRenderer, strip_ansi
from nbformat import NotebookNode
from sphinx.application import Sphinx
from sphinx.config import Config

from ..requirements import NotRunHere
from .nested_cells import map_lines_back

#: myst-nb's name for this renderer (``nb_render_plugin``).
RENDERER_NAME = "qwen_docs"
#: Classes of the parts: the error line keeps myst-nb's ``traceback`` class, which the failure report reads.
ERROR_LINE_CLASS = "qd-error-line"
ERROR_LINE_CLASSES = ["output", "traceback", ERROR_LINE_CLASS]
FRAMES_CLASS = "qd-traceback"
NOT_RUN_CLASS = "qd-not-run"


def error_line(output: NotebookNode) -> str:
    """``Name: message``, as Python prints it last (just ``Name`` for an empty message)."""
    ename, evalue = output.get("ename", ""), output.get("evalue", "")
    return f"{ename}: {evalue}" if evalue else ename


class QwenDocsRenderer(NbElementRenderer):  # type: ignore[misc]  # myst-nb ships no type information
    """myst-nb's renderer, with error outputs as described in the module docs."""

    def __init__(self, renderer: Any, logger: Any) -> None:
        super().__init__(renderer, logger)
        map_lines_back(renderer.md)

    def render_error(
        self, output: NotebookNode, cell_metadata: dict[str, Any], cell_index: int, source_line: int
    ) -> list[nodes.Element]:
        if output.get("ename") == NotRunHere.__name__:
            return [self._not_run(output.get("evalue", ""), source_line)]
        lexer = self.renderer.get_cell_level_config("render_error_lexer", cell_metadata, line=source_line)
        line = self.renderer.create_highlighted_code_block(error_line(output), lexer, source=self.source,
                                                           line=source_line)
        line["classes"] += ERROR_LINE_CLASSES
        traceback = strip_ansi("\n".join(output.get("traceback", [])))
        if traceback.strip() in ("", error_line(output)):  # nothing more to show (a one-line traceback)
            return [line]
        frames = self.renderer.create_highlighted_code_block(traceback, lexer, source=self.source, line=source_line)
        frames["classes"] += ["output", FRAMES_CLASS]
        opening = nodes.raw("", f'<details class="{FRAMES_CLASS}"><summary>Full traceback</summary>', format="html")
        return [line, opening, frames, nodes.raw("", "</details>", format="html")]

    @staticmethod
    def _not_run(notice: str, source_line: int) -> nodes.Element:
        head, _, reasons = notice.partition(":")  # "Not run on this build", "needs ..."
        paragraph = nodes.paragraph()
        paragraph += nodes.strong(text=head + ":")
        paragraph += nodes.Text(reasons)
        box = nodes.container(classes=["output", NOT_RUN_CLASS])
        box.line = source_line
        box += paragraph
        return box


def _default_to_this_renderer(app: Sphinx, config: Config) -> None:
    """Use this renderer where the site names none (conf.py or ``-D``); myst-nb finds it by its entry point, so
    only where the package is installed (not merely on ``sys.path``)."""
    named = "nb_render_plugin" in config.overrides or "nb_render_plugin" in getattr(config, "_raw_config", {})
    if not named and entry_points(group="myst_nb.renderers", name=RENDERER_NAME):
        config.nb_render_plugin = RENDERER_NAME


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("myst_nb")
    app.connect("config-inited", _default_to_this_renderer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
