"""Kernels run over Unix sockets with names of their own, so that no two kernels of a parallel build want one port."""

from __future__ import annotations

import errno
import glob
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import cast

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from sphinx.application import Sphinx

from qwen_docs_helpers.sphinx import kernel_sockets

#: What a cell prints: the transport and address the kernel's sockets were bound on.
WHERE = "from ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\nprint(app.transport, app.ip)"

pytestmark = pytest.mark.skipif(os.name == "nt", reason="IPC transport is not used on Windows")


def test_each_kernel_gets_an_unguessable_prefix_in_the_temporary_directory() -> None:
    first, second = kernel_sockets.socket_prefix(), kernel_sockets.socket_prefix()
    assert first is not None and second is not None and first != second
    for prefix in first, second:
        assert Path(prefix).parent == Path(tempfile.gettempdir())
        assert Path(prefix).name.startswith(kernel_sockets.PREFIX) and len(Path(prefix).name) == len(
            kernel_sockets.PREFIX) + 16


def test_a_temporary_directory_too_long_for_a_socket_name_keeps_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", "/" + "d" * 80)
    assert kernel_sockets.socket_prefix() is None
    manager = AsyncKernelManager()
    kernel_sockets.use_ipc(manager)
    assert manager.transport == "tcp"


def test_a_temporary_directory_that_takes_no_sockets_keeps_tcp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert kernel_sockets.socket_prefix() is not None
    kernel_sockets.takes_sockets.cache_clear()
    monkeypatch.setattr(socket.socket, "bind", refuse)
    assert kernel_sockets.socket_prefix() is None
    kernel_sockets.takes_sockets.cache_clear()


def test_the_probe_leaves_no_file(tmp_path: Path) -> None:
    assert kernel_sockets.takes_sockets(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_manager_configured_for_another_address_is_left_alone() -> None:
    manager = AsyncKernelManager(ip="0.0.0.0")  # a maintainer's choice, not ours to change
    kernel_sockets.use_ipc(manager)
    assert (manager.transport, manager.ip) == ("tcp", "0.0.0.0")


def test_a_page_kernel_runs_over_its_own_unix_sockets_and_leaves_none_behind(
        capfd: pytest.CaptureFixture[str]) -> None:
    kernel_sockets.setup(cast(Sphinx, None))  # as in a build
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    notebook.cells.append(nbformat.v4.new_code_cell(WHERE))
    client = NotebookClient(notebook, kernel_name="python3")
    client.execute()
    transport, prefix = notebook.cells[0].outputs[0]["text"].split()
    assert transport == "ipc"
    assert Path(prefix).name.startswith(kernel_sockets.PREFIX)
    assert glob.glob(glob.escape(prefix) + "-*") == []  # jupyter_client removed the socket files
    assert "over TCP without encryption" not in capfd.readouterr().err  # ipykernel's warning for every TCP kernel


def _socket_file(folder: Path, name: str, *, age_s: float, listening: bool = False) -> tuple[Path, socket.socket]:
    """A Unix socket file as a kernel leaves it: bound, listened on while the kernel runs, and ``age_s`` old."""
    path = folder / name
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    if listening:
        server.listen()
    else:
        server.close()  # the kernel died: the file stays, and nothing listens on it
    os.utime(path, (time.time() - age_s,) * 2)
    return path, server


def test_a_build_removes_the_sockets_that_killed_builds_left_and_keeps_the_rest(tmp_path: Path) -> None:
    ours = kernel_sockets.PREFIX + "0123456789abcdef"
    stale, _ = _socket_file(tmp_path, ours + "-1", age_s=120)
    stale_too, _ = _socket_file(tmp_path, ours + "-5", age_s=3600)
    running, server = _socket_file(tmp_path, ours + "-2", age_s=120, listening=True)
    starting, _ = _socket_file(tmp_path, ours + "-3", age_s=1)  # bound, not yet listened on
    not_ours, _ = _socket_file(tmp_path, "other-kernel-0123456789abcdef-1", age_s=120)
    plain_file = tmp_path / (ours + "-4")
    plain_file.write_text("not a socket")
    os.utime(plain_file, (time.time() - 120,) * 2)
    try:
        removed = kernel_sockets.remove_stale_sockets(str(tmp_path))
    finally:
        server.close()
    assert sorted(removed) == sorted([str(stale), str(stale_too)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (running, starting, not_ours, plain_file))


def test_sphinx_setup_sweeps_the_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale, _ = _socket_file(tmp_path, kernel_sockets.PREFIX + "fedcba9876543210-1", age_s=120)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kernel_sockets.setup(cast(Sphinx, None))
    assert not stale.exists()


def test_a_missing_temporary_directory_is_not_an_error(tmp_path: Path) -> None:
    assert kernel_sockets.remove_stale_sockets(str(tmp_path / "gone")) == []
