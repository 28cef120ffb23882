"""Cells that need a GPU or an optional package: run them where possible, say plainly where not.

Some recipes only make sense on a CUDA GPU (FlashAttention kernels, fp16 GPU kernels) or with a package the
build machine cannot install (``tensorrt_llm``, ``flash_attn``). Such a cell starts with one call::

    from qwen_docs_helpers.requirements import require

    require(cuda=True, packages=["tensorrt_llm"])
    from tensorrt_llm import LLM
    ...

The needs are ``cuda=True`` (a CUDA GPU), ``cuda_capability=(8, 0)`` (GPUs at least that new), ``gpus=2`` (that
many CUDA GPUs) and ``packages=[...]`` (import names, looked up without importing them).

- Where everything is there, :func:`require` returns and the rest of the cell runs as usual.
- Where something is missing, it raises :class:`NotRunHere`. In IPython (and so in an executed page) the
  exception displays as one sentence instead of a traceback, e.g. ``Not run on this build: needs a CUDA GPU
  (this build ran on CPU) and the tensorrt_llm package (not installed).`` (wrapped at :data:`NOTICE_WIDTH`
  columns), and the rest of the cell is skipped. In a plain Python script it is an ordinary exception with the
  same message on one line.

On a page, such a cell is tagged ``raises-exception`` so that the build goes on past the notice. That tag
would also let a *real* failure through on a machine where the requirements are met, so :func:`require`
keeps a record: under IPython it watches how each cell whose requirements were met ends (IPython's
``post_run_cell`` event), and :func:`assert_ran` raises ``AssertionError`` for every such cell that raised.
Every page that uses :func:`require` ends with a hidden check cell::

    ```{code-cell} ipython3
    :tags: [remove-cell]

    from qwen_docs_helpers import requirements

    requirements.assert_ran()
    ```

So on a CPU build the cells say they did not run and why; on a GPU runner with the packages they run, and any
error in them fails the build. Only requirements that are really unmet produce the notice: the exception is
never raised for anything else. Pages may also use :func:`met` in hidden checks (``if met(cuda=True): ...``)
to assert what a cell produced where it could run.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "NOTICE_PREFIX",
    "NOTICE_WIDTH",
    "NotRunHere",
    "RunRecord",
    "assert_ran",
    "met",
    "missing",
    "records",
    "require",
]

#: How every notice starts, so readers (and tests) can recognise it.
NOTICE_PREFIX = "Not run on this build: needs "
#: Width at which the displayed notice wraps: cell outputs on the site do not wrap long lines, they scroll.
NOTICE_WIDTH = 80

Outcome = Literal["skipped", "running", "ok", "failed"]


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _cuda_reasons(cuda: bool, capability: tuple[int, int] | None, gpus: int) -> list[str]:
    if not cuda and capability is None and gpus <= 1:
        return []
    if capability is None:
        wanted = "a CUDA GPU" if gpus <= 1 else f"{gpus} CUDA GPUs"
    else:
        newer = f"of compute capability {capability[0]}.{capability[1]} or newer"
        wanted = f"an NVIDIA GPU {newer}" if gpus <= 1 else f"{gpus} NVIDIA GPUs {newer}"
    if importlib.util.find_spec("torch") is None:
        return [f"{wanted} (torch is not installed)"]
    import torch

    if not torch.cuda.is_available():
        return [f"{wanted} (this build ran on CPU)"]
    count = torch.cuda.device_count()
    if count < gpus:
        return [f"{wanted} (this build has {count})"]
    if capability is not None:
        have = min(tuple(torch.cuda.get_device_capability(i)) for i in range(max(gpus, 1)))
        if have < tuple(capability):
            name = torch.cuda.get_device_name(0)
            return [f"{wanted} (this build's {name} is {have[0]}.{have[1]})"]
    return []


def _package_reasons(packages: Iterable[str]) -> list[str]:
    absent = []
    for name in packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package is missing, or a malformed name
            found = False
        if not found:
            absent.append(name)
    if not absent:
        return []
    noun = "package" if len(absent) == 1 else "packages"
    return [f"the {_join(absent)} {noun} (not installed)"]


def missing(
    *,
    cuda: bool = False,
    packages: Iterable[str] = (),
    cuda_capability: tuple[int, int] | None = None,
    gpus: int = 1,
) -> list[str]:
    """What is missing for a cell, one phrase per need (``[]`` when everything is there).

    ``cuda``: a CUDA GPU visible to torch. ``cuda_capability``: CUDA GPUs of at least that compute capability
    (``(8, 0)`` is Ampere; implies ``cuda``). ``gpus``: how many CUDA GPUs (more than 1 implies ``cuda``).
    ``packages``: import names, checked without importing them.
    """
    if isinstance(packages, str):
        raise TypeError("packages must be a list of import names, not one string")
    return _cuda_reasons(cuda, cuda_capability, gpus) + _package_reasons(packages)


def met(
    *,
    cuda: bool = False,
    packages: Iterable[str] = (),
    cuda_capability: tuple[int, int] | None = None,
    gpus: int = 1,
) -> bool:
    """Whether a cell with these requirements runs here."""
    return not missing(cuda=cuda, packages=packages, cuda_capability=cuda_capability, gpus=gpus)


class NotRunHere(Exception):
    """A cell's requirements are not met here; IPython shows only :attr:`notice`, one line."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = tuple(reasons)
        self.notice = f"{NOTICE_PREFIX}{_join(self.reasons)}."
        super().__init__(self.notice)

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of formatting a traceback; the kernel sends these lines as the error output.
        # One sentence, wrapped so that it can be read without scrolling sideways.
        return textwrap.wrap(self.notice, NOTICE_WIDTH, break_on_hyphens=False)


@dataclass
class RunRecord:
    """One :func:`require` call: what it needed and how its cell ended."""

    needs: str
    outcome: Outcome
    cell: int | None = None  # the cell's ``In [n]`` number, once IPython reports the cell's end
    error: str | None = None
    tracked: bool = False  # whether the cell's end was observed (only under IPython)


_RECORDS: list[RunRecord] = []


def records() -> list[RunRecord]:
    """Every :func:`require` call of this process, in order."""
    return list(_RECORDS)


def _describe(cuda: bool, packages: Sequence[str], capability: tuple[int, int] | None, gpus: int) -> str:
    parts = []
    if capability is not None:
        parts.append(f"cuda>={capability[0]}.{capability[1]}")
    elif cuda or gpus > 1:
        parts.append("cuda")
    if gpus > 1:
        parts.append(f"{gpus} gpus")
    parts.extend(packages)
    return ", ".join(parts) or "nothing"


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _watch_cell(shell: Any, record: RunRecord) -> None:
    """Record how the current cell ends, once, through IPython's ``post_run_cell`` event."""

    def on_end(result: Any) -> None:
        shell.events.unregister("post_run_cell", on_end)
        record.cell = getattr(result, "execution_count", None)
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if error is None:
            record.outcome = "ok"
        else:
            record.outcome, record.error = "failed", f"{type(error).__name__}: {error}"

    shell.events.register("post_run_cell", on_end)


def require(
    *,
    cuda: bool = False,
    packages: Iterable[str] = (),
    cuda_capability: tuple[int, int] | None = None,
    gpus: int = 1,
) -> None:
    """Return if this cell's requirements are met here; otherwise raise :class:`NotRunHere` saying what is missing.

    The arguments are those of :func:`missing`. See the module documentation for the page pattern
    (``raises-exception`` tag plus :func:`assert_ran`).
    """
    packages = list(packages) if not isinstance(packages, str) else packages
    reasons = missing(cuda=cuda, packages=packages, cuda_capability=cuda_capability, gpus=gpus)
    shell = _ipython()
    record = RunRecord(_describe(cuda, packages, cuda_capability, gpus), "skipped" if reasons else "running")
    _RECORDS.append(record)
    if reasons:
        raise NotRunHere(reasons)
    if shell is not None and hasattr(shell, "events"):
        record.tracked = True
        _watch_cell(shell, record)


def assert_ran() -> str:
    """Fail if any cell whose requirements were met raised; otherwise return a one-line summary.

    Cells whose requirements were unmet (they showed the notice) are fine. Only cells observed under IPython
    can be checked; in a plain script a failing cell has already stopped the script.
    """
    failed = [r for r in _RECORDS if r.tracked and r.outcome in ("failed", "running")]
    if failed:
        details = "; ".join(
            f"cell In [{r.cell if r.cell is not None else '?'}] (needs {r.needs}): {r.error or 'did not finish'}"
            for r in failed
        )
        raise AssertionError(f"{len(failed)} cell(s) had their requirements met here but failed: {details}")
    ran = sum(r.outcome == "ok" for r in _RECORDS)
    skipped = sum(r.outcome == "skipped" for r in _RECORDS)
    return f"{ran} cell(s) with requirements ran, {skipped} not run here (requirements unmet)"
