"""Kernels that pages run in talk to the build over Unix sockets with private names, not over TCP ports.

Over TCP, jupyter_client picks free ports, closes them and hands them to the kernel, which cannot bind one that
another process took in between (jupyter/jupyter_client#154, open): in a parallel build, a healthy kernel now and
then failed as it started (ipykernel also warns at each start over TCP that its sockets are unencrypted). Both
libraries support IPC transport (``ipc://<ip>-<port>``, where ``ip`` is a path prefix and the "ports" count up
from 1), so each new kernel manager gets ``transport="ipc"`` and a random prefix of its own in the temporary
directory: no two kernels can want the same socket, and jupyter_client removes the socket files when it cleans up
after the kernel. nbclient makes every kernel manager in ``NotebookClient.create_kernel_manager`` (no option
reaches the manager through jupyter-cache and myst-nb), so that method is wrapped.

TCP is kept on Windows, where ZeroMQ may lack IPC, where the temporary directory's path is too long for a socket's
name or its file system takes no sockets, and for a manager configured for another transport or address.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import tempfile
from typing import Any

from jupyter_client.localinterfaces import localhost
from nbclient import NotebookClient
from sphinx.application import Sphinx

#: What the socket files' names start with, in the temporary directory.
PREFIX = "qwen-docs-kernel-"
#: The longest path prefix used: a socket's path (prefix, "-" and a port of up to 3 digits) must fit the 104 bytes
#: that macOS allows for a Unix socket's name (108 on Linux), with its terminating NUL.
LONGEST_PATH = 99


@functools.cache
def takes_sockets(folder: str) -> bool:
    """Whether a Unix socket can be made in ``folder`` (some network and shared file systems take none)."""
    path = os.path.join(folder, PREFIX + secrets.token_hex(8) + "-0")  # as long as a kernel's socket
    try:
        with socket.socket(socket.AF_UNIX) as probe:
            probe.bind(path)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.remove(path)
    return True


def socket_prefix() -> str | None:
    """A new, unguessable path prefix for one kernel's sockets, or None where IPC is not used (see the module)."""
    if os.name == "nt":
        return None
    folder = tempfile.gettempdir()
    prefix = os.path.join(folder, PREFIX + secrets.token_hex(8))
    return prefix if len(os.fsencode(prefix)) <= LONGEST_PATH and takes_sockets(folder) else None


def use_ipc(manager: Any) -> None:
    """Give a kernel manager that has not started its kernel, and is on jupyter_client's default TCP address, IPC
    sockets of its own."""
    if manager.has_kernel or manager.transport != "tcp" or manager.ip != localhost():
        return
    prefix = socket_prefix()
    if prefix is not None:
        manager.transport = "ipc"
        manager.ip = prefix


def _on_ipc(create: Any) -> Any:
    @functools.wraps(create)
    def wrapper(self: NotebookClient, *args: Any, **kwargs: Any) -> Any:
        manager = create(self, *args, **kwargs)
        use_ipc(manager)
        return manager

    wrapper.uses_ipc = True  # type: ignore[attr-defined]  # marks the patch, so it is applied once
    return wrapper


def setup(app: Sphinx) -> dict[str, object]:
    if not getattr(NotebookClient.create_kernel_manager, "uses_ipc", False):  # once per process
        NotebookClient.create_kernel_manager = _on_ipc(NotebookClient.create_kernel_manager)  # type: ignore[method-assign]
    return {"parallel_read_safe": True, "parallel_write_safe": True}
