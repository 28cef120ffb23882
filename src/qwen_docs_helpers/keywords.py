"""Python's "unexpected keyword argument", turned into an error that says what to pass instead.

Readers bring the options of the calls a helper replaces: ``torch_dtype=`` (transformers 4's name for
``dtype``), ``quantization_config=`` or ``load_in_4bit=`` for :func:`~qwen_docs_helpers.loading.load_model`.
Python names the argument and nothing more; the helpers name the argument to use, or the call that takes it.
Hand-written: no library maps one API's argument names onto another's.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ParamSpec, TypeVar

from .errors import UnknownArgumentError

__all__ = ["closest_name", "explain_unknown_keywords", "unknown_keywords_error"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


#: How alike a name must be to one that is taken to be offered as its spelling (difflib's ratio).
CLOSE_RATIO = 0.8


def closest_name(name: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` that ``name`` is most likely a misspelling of, if one is close (:data:`CLOSE_RATIO`)."""
    close = difflib.get_close_matches(name, sorted(names), n=1, cutoff=CLOSE_RATIO)
    return close[0] if close else None


def _listed(names: Sequence[str], last: str) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


def unknown_keywords_error(function: str, unknown: Sequence[str], accepted: Sequence[str],
                           hints: Mapping[str, str], otherwise: str) -> UnknownArgumentError:
    """The error for ``unknown`` keywords passed to ``function``, which takes the ``accepted`` ones.

    Each name gets its fix from ``hints``, else a "did you mean" when it is close to an accepted name
    (:func:`closest_name`), else ``otherwise``; a fix shared by several names is said once.
    """
    fixes: list[str] = []
    for name in unknown:
        close = closest_name(name, accepted)
        fix = hints.get(name) or (f"did you mean {close}=?" if close else otherwise)
        if fix not in fixes:
            fixes.append(fix)
    taken = _listed([f"{name}=" for name in unknown], "or")
    return UnknownArgumentError(f"{function}() does not take {taken}", "; ".join(fixes))


def explain_unknown_keywords(
    hints: Mapping[str, str], otherwise: str, *, name: str | None = None
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a function so that a keyword it does not take raises :func:`unknown_keywords_error`'s error.

    The check runs before the function, on the names only; the signature (for type checkers and the API
    reference) is the function's own. ``name`` is what the error calls the function (default its
    ``__name__``; for a class's ``__init__``, the name users call it by). ``{keywords}`` in ``otherwise`` becomes
    the function's keyword-only parameters (``"a=, b= and c="``), so the list cannot fall behind the signature.
    """

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        parameters = inspect.signature(function).parameters
        if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
            raise TypeError(f"{function.__qualname__} takes **kwargs, so no keyword is unknown to it")
        accepted = [keyword for keyword, parameter in parameters.items()
                    if parameter.kind in _KEYWORD_KINDS and keyword != "self"]
        keyword_only = [f"{keyword}=" for keyword, parameter in parameters.items()
                        if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
        fix = otherwise.replace("{keywords}", _listed(keyword_only, "and")) if keyword_only else otherwise
        accepted_set = frozenset(accepted)

        @functools.wraps(function)
        def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            unknown = [name for name in kwargs if name not in accepted_set]
            if unknown:
                raise unknown_keywords_error(name or function.__name__, unknown, accepted, hints, fix)
            return function(*args, **kwargs)

        return checked

    return decorate
