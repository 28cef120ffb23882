"""explain_unknown_keywords: Python's "unexpected keyword argument", with what to pass instead."""

from __future__ import annotations

import inspect

import pytest

from qwen_docs_helpers.errors import UnknownArgumentError
from qwen_docs_helpers.keywords import explain_unknown_keywords, unknown_keywords_error


@explain_unknown_keywords({"colour": "pass color= (US spelling)"}, "see help(paint)")
def paint(wall: str, /, color: str = "white", *, coats: int = 1) -> str:
    """Paint a wall."""
    return f"{wall}: {coats} x {color}"


def test_accepted_keywords_positionals_and_defaults_pass_through() -> None:
    assert paint("north") == "north: 1 x white"
    assert paint("north", "red", coats=2) == "north: 2 x red"
    assert paint("north", color="red") == "north: 1 x red"


def test_the_signature_name_and_docstring_are_the_functions_own() -> None:
    assert list(inspect.signature(paint).parameters) == ["wall", "color", "coats"]
    assert paint.__name__ == "paint" and paint.__doc__ == "Paint a wall."


@pytest.mark.parametrize(
    ("keywords", "message"),
    [({"colour": "red"}, "paint() does not take colour=: pass color= (US spelling)"),
     ({"coat": 2}, "paint() does not take coat=: did you mean coats=?"),
     ({"brush": "wide"}, "paint() does not take brush=: see help(paint)"),
     # A positional-only parameter is not a keyword it takes.
     ({"wall": "south"}, "paint() does not take wall=: see help(paint)")],
)
def test_an_unknown_keyword_gets_its_fix(keywords: dict[str, object], message: str) -> None:
    args = () if "wall" in keywords else ("north",)
    with pytest.raises(UnknownArgumentError) as caught:
        paint(*args, **keywords)  # type: ignore[call-arg]
    assert str(caught.value) == message


def test_the_function_does_not_run_when_a_keyword_is_unknown() -> None:
    calls: list[object] = []

    @explain_unknown_keywords({}, "no")
    def record(value: object = None) -> None:
        calls.append(value)

    with pytest.raises(TypeError):
        record(value=1, valeu=2)  # type: ignore[call-arg]
    assert calls == []


def test_a_fix_shared_by_several_names_is_said_once() -> None:
    error = unknown_keywords_error("paint", ["brush", "colour", "ladder"], ["color", "coats"],
                                   {"colour": "pass color="}, "see help(paint)")
    assert error.problem == "paint() does not take brush=, colour= or ladder="
    assert error.fix == "see help(paint); pass color="


def test_a_function_with_var_keywords_cannot_be_decorated() -> None:
    def anything(**kwargs: object) -> None: ...

    with pytest.raises(TypeError, match=r"takes \*\*kwargs"):
        explain_unknown_keywords({}, "no")(anything)


def test_keywords_in_the_fix_are_the_signatures_keyword_only_parameters() -> None:
    @explain_unknown_keywords({}, "brush takes {keywords}")
    def brush(width: int, *, bristles: str = "soft", handle: str = "wood") -> None: ...

    with pytest.raises(UnknownArgumentError, match=r": brush takes bristles= and handle=$"):
        brush(1, colour="red")  # type: ignore[call-arg]
