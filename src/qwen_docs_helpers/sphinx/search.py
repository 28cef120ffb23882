"""Keep cell outputs out of the site's search index.

What cells print is results, not documentation: on a build with stand-in weights it is mostly random
tokens in every script, so a reader searching for a word found pages that merely generated it. Sphinx
skips nodes with the ``no-search`` class; the prose and the code stay searchable.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform

from .cells import is_cell_output

#: Sphinx's class for content its search index leaves out.
NO_SEARCH = "no-search"


class KeepOutputsOutOfSearch(SphinxTransform):
    """Mark every rendered cell output ``no-search``."""

    default_priority = 500

    def apply(self, **kwargs: Any) -> None:
        for output in self.document.findall(is_cell_output):
            if isinstance(output, nodes.Element) and NO_SEARCH not in output["classes"]:
                output["classes"].append(NO_SEARCH)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_transform(KeepOutputsOutOfSearch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
