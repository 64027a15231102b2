"""A real ``jupyter lab`` and a headless Debian Chromium for browser tests and the sidebar benchmark.

JupyterLab runs as its own process group on a free loopback port with a random token, a private root
directory and ``AIFLOW_HOME``; :meth:`JupyterLab.stop` ends that group (SIGTERM: the server shuts its
kernels down; then SIGKILL if it hangs). Chromium is Debian's (``/usr/bin/chromium``) driven
by the Python ``playwright`` pinned for it (docs/lab_extension.md): never a downloaded browser.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

from aiflow_notebook.core.ports import free_port
from aiflow_notebook.core.processes import end_process
from aiflow_notebook.testing.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


def chromium_version() -> str:
    """``chromium --version`` (the major version must match the pinned playwright's; see PANELS.md)."""
    out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def launch_chromium(playwright):
    """Headless Debian Chromium through ``playwright`` (no browser download, no sandbox: we run as root)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


class JupyterLab:
    """``jupyter lab --allow-root --no-browser`` on a free port; ``url(path)`` carries the token."""

    def __init__(self, root: Path, aiflow_home: Path, env: dict[str, str] | None = None):
        self.root, self.aiflow_home = Path(root), Path(aiflow_home)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root.parent / f"jupyterlab-{self.port}.log"

    def start(self, timeout: float = 120.0) -> JupyterLab:
        env = {**os.environ, **self.env, "AIFLOW_HOME": str(self.aiflow_home),
               "JUPYTER_CONFIG_DIR": str(self.root.parent / "jupyter-config"),
               "JUPYTER_RUNTIME_DIR": str(self.root.parent / "jupyter-runtime"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if "AIFLOW_EVENT_URL" not in self.env:
            env.pop("AIFLOW_EVENT_URL", None)
        settings = self.root.parent / "lab-user-settings"
        cmd = [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.news_url=None", f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={self.root.parent / 'lab-workspaces'}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}); its log:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(answers, timeout=timeout, what=f"jupyter lab answering on port {self.port}", interval=0.3)
        return self

    def start_kernel_for(self, notebook: str) -> str:
        """Start the notebook's kernel session through the REST API (it answers once the kernel runs), so
        the page opens on a running kernel: no "Select Kernel" dialog, no kernel started twice."""
        body = json.dumps({"path": notebook, "type": "notebook", "name": "",
                           "kernel": {"name": "python3"}}).encode()
        request = urllib.request.Request(self.url("api/sessions"), data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["kernel"]["id"]

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to its process group (JupyterLab shuts its kernels down, which run in sessions of their
        own), then SIGKILL of what is left of the group after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        end_process(self.proc, timeout)

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
