"""Drive a real JupyterLab in Debian's Chromium: start the server, open a notebook, find widgets.

`JupyterLab(notebook_dir, log_path)` starts `jupyter lab` on a free port with a random token, its
own settings, workspaces and runtime folders (nothing of the user's is read or written) and
`overrides.json` beside this file: the kernel starts by itself (else Run All asks for one in a
dialog), every cell stays in the DOM (windowing off), and no news or update checks go out.
`launch_chromium(p)` starts /usr/bin/chromium through playwright (never `playwright install`).
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
# the kernel must see a frontend: no pytest marker, no forced foreground
DROP_ENV = ("PYTEST_CURRENT_TEST", "EFFITRAIN_FOREGROUND", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR",
            "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class JupyterLab:
    def __init__(self, notebook_dir: Path, home: Path, log_path: Path, env: dict[str, str] | None = None):
        self.notebook_dir, self.home, self.log_path = Path(notebook_dir), Path(home), Path(log_path)
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        """A fresh workspace, so no layout saved by an earlier session is restored."""
        return f"{self.base_url}/lab/workspaces/t{uuid.uuid4().hex[:12]}/tree/{name}?token={self.token}"

    def __enter__(self) -> "JupyterLab":
        app_settings = self.home / "app-settings"
        app_settings.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "overrides.json", app_settings / "overrides.json")
        env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        env.update(JUPYTER_CONFIG_DIR=str(self.home / "config"), JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(self.home / "user-settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.home / "workspaces"), **self.extra_env)
        cmd = [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip", "127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.notebook_dir}", f"--LabApp.app_settings_dir={app_settings}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.notebook_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout=90)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the server shuts its kernels down
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


# -- reading the page ------------------------------------------------------------------------------
def plot_vertices(plot) -> int:
    """Points drawn in a plotly plot: line vertices plus markers, over every trace."""
    total = plot.locator("g.scatterlayer path.point").count()
    for d in plot.locator("g.scatterlayer path.js-line").evaluate_all("els => els.map(e => e.getAttribute('d') || '')"):
        total += d.count("L") + (1 if d.startswith("M") else 0)
    return total


def legend_texts(plot) -> list[str]:
    return [t.strip() for t in plot.locator("g.legend text.legendtext").all_text_contents()]
