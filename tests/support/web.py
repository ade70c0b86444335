"""What the web tests share: a free loopback port, `mmfs web` run as a command, Debian's headless Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright's own browser download cannot run here
# Without these it stalls on a closed network (first-run tasks, component updates, QUIC probes, sync).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebCommand:
    """`mmfs web ARGS` in a subprocess, in `cwd`; `url` once it says it is serving."""

    def __init__(self, args: list[str], cwd: Path, timeout: float = 120.0) -> None:
        self.port = free_port()
        self.log = cwd / "web.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "mmfs_cli.app", "web", *args, "--port", str(self.port)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + timeout
        while "serving" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mmfs web did not start:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def chromium_context(playwright, **options):
    """A headless Chromium of Debian's package with a new empty profile, driven by Playwright."""
    return playwright.chromium.launch_persistent_context(
        tempfile.mkdtemp(prefix="mmfs-chromium-"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        **options,
    )  # fmt: skip
