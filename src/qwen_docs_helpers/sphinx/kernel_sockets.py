"""Kernels that pages run in talk to the build over Unix sockets with private names, not over TCP ports.

Over TCP, jupyter_client picks free ports, closes them and hands them to the kernel, which cannot bind one that
another process took in between (jupyter/jupyter_client#154, open): in a parallel build, a healthy kernel now and
then failed as it started (ipykernel also warns at each start over TCP that its sockets are unencrypted). Both
libraries support IPC transport (``ipc://<ip>-<port>``, where ``ip`` is a path prefix and the "ports" count up
from 1), so each new kernel manager gets ``transport="ipc"`` and a random prefix of its own in the temporary
directory: no two kernels can want the same socket, and jupyter_client removes the socket files when it cleans up
after the kernel. A build that was killed cannot clean up, so each build first removes the socket files that such
builds left (ours by name and owner, older than a minute, and with nothing listening on them).

nbclient makes every kernel manager in ``NotebookClient.create_kernel_manager`` (no option reaches the manager
through jupyter-cache and myst-nb), so that method is wrapped.

TCP is kept on Windows, where ZeroMQ may lack IPC, where the temporary directory's path is too long for a socket's
name or its file system takes no sockets, and for a manager configured for another transport or address.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from typing import Any

from jupyter_client.localinterfaces import localhost
from nbclient import NotebookClient
from sphinx.application import Sphinx

#: What the socket files' names start with, in the temporary directory.
PREFIX = "qwen-docs-kernel-"
#: The longest path prefix used: a socket's path (prefix, "-" and a port of up to 3 digits) must fit the 104 bytes
#: that macOS allows for a Unix socket's name (108 on Linux), with its terminating NUL.
LONGEST_PATH = 99
#: A socket file of ours: the prefix, 16 hex digits, and the "port" jupyter_client counted up to.
SOCKET_NAME = re.compile(re.escape(PREFIX) + r"[0-9a-f]{16}-[0-9]+")
#: How old a socket file must be before a sweep may remove it: a kernel binds its socket and then listens on it,
#: so a brand-new file with no listener yet may belong to a kernel that is starting.
STALE_AFTER_S = 60.0


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


def is_listened_on(path: str) -> bool:
    """Whether a process listens on the Unix socket at ``path`` (a refused connection means none does)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError as error:
            return error.errno != errno.ECONNREFUSED  # another error (EACCES, say): leave the file alone
    return True


def remove_stale_sockets(folder: str | None = None) -> list[str]:
    """Remove the kernel socket files that killed builds left in ``folder`` (the temporary directory), and return
    their paths; files of kernels that still run, files of other users and new files are kept."""
    folder = folder or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not SOCKET_NAME.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if (not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid()
                        or time.time() - info.st_mtime < STALE_AFTER_S or is_listened_on(entry.path)):
                    continue
                os.remove(entry.path)
                removed.append(entry.path)
    return removed


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
    if os.name != "nt":
        remove_stale_sockets()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
