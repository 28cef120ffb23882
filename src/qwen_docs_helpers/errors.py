"""Errors the helpers raise, each one line that says what is wrong and what to do about it.

Readers meet these in executed notebook cells and in terminals, where a wall of text hides the fix. Every
error is built from a *problem* and a *fix*, rendered ``"<problem>: <fix>"`` on a single line. Each class
also derives from the built-in exception that code around ``transformers`` already catches (``OSError``
for missing weights, ``ImportError`` for missing packages, ...), so switching to these helpers does not
break existing ``except`` clauses.
"""

from __future__ import annotations

__all__ = [
    "AttentionUnavailableError",
    "InsufficientMemoryError",
    "InvalidArgumentError",
    "InvalidMessagesError",
    "MissingExtraError",
    "ModelNotAvailableError",
    "QuantizationUnavailableError",
    "QwenDocsError",
    "ResultsNotFoundError",
    "StreamTimeoutError",
    "UnknownArgumentError",
    "UnsafeWeightsError",
]


def _one_line(text: str) -> str:
    """Collapse line breaks (and the indentation around them) so a message stays on one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class QwenDocsError(Exception):
    """Base class: ``str(error)`` is ``"<problem>: <fix>"`` on one line; both parts stay available."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = _one_line(problem)
        self.fix = _one_line(fix)
        super().__init__(f"{self.problem}: {self.fix}")

    def __reduce__(self) -> tuple[type[QwenDocsError], tuple[object, ...]]:
        # Rebuild from the two parts (the default would call cls(message) and lose the split), so errors
        # survive pickling, e.g. on their way back from a worker process.
        return type(self), (self.problem, self.fix)


class InvalidMessagesError(QwenDocsError, ValueError):
    """A conversation (or batch of conversations) is not the list of role/content dicts chat templates need."""


class InvalidArgumentError(QwenDocsError, ValueError):
    """An argument other than the messages is out of range or of the wrong kind."""


class UnknownArgumentError(InvalidArgumentError, TypeError):
    """A keyword argument the function does not take, with what to pass instead.

    A ``TypeError``, as Python's own "unexpected keyword argument" is, and an :class:`InvalidArgumentError`.
    """


class InsufficientMemoryError(QwenDocsError, MemoryError):
    """Something the helpers allocate at once (the fast path's static KV cache) is larger than the memory the device
    has left; refused before anything is allocated."""


class ModelNotAvailableError(QwenDocsError, OSError):
    """The weights for a model id are neither on disk nor downloadable (offline mode)."""


class UnsafeWeightsError(QwenDocsError, OSError):
    """A checkpoint has only pickled ``.bin`` weights, which can run code when loaded; we load safetensors."""


class QuantizationUnavailableError(QwenDocsError, ImportError):
    """bitsandbytes is missing or cannot run on this machine's devices."""


class AttentionUnavailableError(QwenDocsError, ImportError):
    """The requested attention kernel (e.g. FlashAttention-2) cannot be used here and no fallback was allowed."""


class StreamTimeoutError(QwenDocsError, TimeoutError):
    """A streamed reply produced no text for longer than the allowed wait."""


class MissingExtraError(QwenDocsError, ImportError):
    """A module needs an optional dependency (a ``pip install 'qwen-docs-helpers[...]'`` extra) that is missing."""


class ResultsNotFoundError(QwenDocsError, FileNotFoundError):
    """Benchmark results are not where they were looked for (no such folder, or no checkout to find them in)."""


def missing_docs_extra(module: str, error: ModuleNotFoundError) -> MissingExtraError | None:
    """The error for ``module`` when a package of the ``docs`` extra (Sphinx, myst-nb, ...) is not installed;
    ``None`` when the missing module is one of ours (a bug, to be seen as it is)."""
    missing = (error.name or "").partition(".")[0]
    if not missing or missing == "qwen_docs_helpers":
        return None
    return MissingExtraError(f"{module} needs {missing}, which is not installed",
                             "pip install 'qwen-docs-helpers[docs]' (the site's Sphinx tooling)")
