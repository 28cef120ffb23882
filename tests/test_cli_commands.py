"""The command lines on the model cards: what the pages show is what their hidden cells run, and it runs.

``docs/qwen2.md`` and ``docs/qwen2-moe.md`` show ``transformers serve ...`` and ``transformers chat ...`` in
``bash`` blocks, and a hidden cell on each page runs them at build time through ``run_cli(serve, chat, typed)``.
These tests check that the hidden cell runs exactly the lines shown, and run the shown lines in a shell
against the stand-ins on loopback, so a broken command fails here without building the docs. Like the pages,
they take turns with port 8000 through a lock file, and use another free port only if 8000 is taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = {"qwen2.md": "Qwen/Qwen2-7B-Instruct", "qwen2-moe.md": "Qwen/Qwen1.5-MoE-A2.7B-Chat"}
PORT = "8000"


def shown_commands(page: str) -> tuple[str, str]:
    """The ``transformers serve`` and ``transformers chat`` lines of the page's ``bash`` blocks."""
    blocks = re.findall(r"^```bash\n(.*?)^```$", (DOCS / page).read_text(), flags=re.MULTILINE | re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    serve = [line for line in lines if line.startswith("transformers serve ")]
    chat = [line for line in lines if line.startswith("transformers chat ")]
    assert len(serve) == 1 and len(chat) == 1, f"{page}: expected one serve and one chat line, got {serve + chat}"
    return serve[0], chat[0]


def executed_commands(page: str) -> tuple[str, str]:
    """The two command strings the page's hidden cell passes to ``run_cli``."""
    match = re.search(r'^run_cli\(\n\s+"([^"\n]+)",\n\s+"([^"\n]+)",', (DOCS / page).read_text(), flags=re.MULTILINE)
    assert match, f"{page}: no run_cli(serve, chat, typed) call found"
    return match.group(1), match.group(2)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_hidden_cell_runs_the_commands_shown(page: str) -> None:
    assert executed_commands(page) == shown_commands(page)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_commands_stay_on_loopback(page: str) -> None:
    serve, chat = shown_commands(page)
    model_id = PAGES[page]
    assert serve == f"transformers serve {model_id} --host 127.0.0.1 --port {PORT}"
    assert chat.startswith(f"transformers chat {model_id} http://127.0.0.1:{PORT} ")


@contextlib.contextmanager
def port_8000() -> Iterator[str]:
    """Port 8000 while no one else uses it (the pages' hidden cells take the same lock), else a free port."""
    with open(os.path.join(tempfile.gettempdir(), "qwen-docs-port-8000.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket() as probe:
            taken = probe.connect_ex(("127.0.0.1", int(PORT))) == 0
        if not taken:
            yield PORT
            return
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            yield str(free.getsockname()[1])


def wait_for_health(server: subprocess.Popen[str], port: str, log: IO[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(
                    f"the server did not answer on port {port} (exit code {server.poll()}):\n{log.read()[-3000:]}"
                )
            time.sleep(0.5)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_shown_commands_run(page: str, standin_hub: dict[str, Path]) -> None:
    serve, chat = shown_commands(page)
    model_id = PAGES[page]
    assert model_id in standin_hub
    # As in an activated environment: this Python's console scripts first on PATH.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    # The chat client refuses every request, even to loopback, while HF_HUB_OFFLINE is set (conftest sets it).
    chat_env = {key: value for key, value in env.items() if key != "HF_HUB_OFFLINE"}
    with port_8000() as port, tempfile.TemporaryFile(mode="w+") as log:
        serve, chat = serve.replace(PORT, port), chat.replace(PORT, port)
        server = subprocess.Popen(
            ["bash", "-c", f"exec {serve}"], env=env, text=True, start_new_session=True, stdout=log, stderr=log
        )
        try:
            wait_for_health(server, port, log)
            result = subprocess.run(
                ["bash", "-c", chat],
                env=chat_env,
                input="Hello!\nn\n!exit\n",
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert server.poll() is None, "the server we started exited: another process answered on the port"
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the session started above: the server and nothing else
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"<{model_id}>:" in result.stdout, result.stdout[-2000:]
    assert re.search(r"\d+ tokens in [\d.]+s", result.stdout), result.stdout[-2000:]
