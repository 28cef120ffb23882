"""Kernels run over Unix sockets with names of their own, so that no two kernels of a parallel build want one port."""

from __future__ import annotations

import errno
import glob
import os
import socket
import tempfile
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
