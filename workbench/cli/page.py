"""`workbench app` / `make app`: the workbench as a standalone web page, served by Voilà from notebooks/app.ipynb.

The page is the same `Workbench()` the notebooks show, without code cells. This module only checks the options
and starts `voila` in a child process; the options reach the notebook's kernel as WORKBENCH_APP_* environment
variables (a Voilà page takes no arguments of its own). It imports no UI (the front's two parts do not import
each other: the import contracts), so the tab names are listed here and a test keeps them equal to the app's.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workbench.core.files import check_writable_dir
from workbench.core.paths import notebooks_dir

NOTEBOOK = notebooks_dir() / "app.ipynb"
# the attributes of workbench.ui.app.PANELS, in the app's order
TABS = ("setup", "adapter", "train", "sweep", "compare", "results", "lora_explainer", "quant_explainer")
DEFAULT_PORT = 8866  # Voilà's own default
LOOPBACK = "127.0.0.1"  # served here, only this machine reaches the page: no token needed
MIN_TOKEN = 12  # characters: a token a room could guess is no token
ENV_PRESET, ENV_RUNS, ENV_TABS, ENV_OVERRIDES = (
    "WORKBENCH_APP_PRESET",
    "WORKBENCH_APP_RUNS",
    "WORKBENCH_APP_TABS",
    "WORKBENCH_APP_OVERRIDES",
)
TEMPLATE = "workbench-offline"
# Voilà's lab template links Font Awesome's CSS from cdn.jsdelivr.net; its own bundle already carries the icon
# fonts, and offline a stylesheet link to an unreachable host can hold the page's first paint until it times
# out. This template is the lab one with those two links cut out (tests/scenarios/test_voila_page.py checks no
# request leaves the machine).
TEMPLATE_INDEX = """{%- extends 'lab/index.html.j2' -%}
{%- block notebook_css -%}
{{ super()
   | replace('<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/all.min.css" type="text/css" />', '')
   | replace('<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@^5/css/v4-shims.min.css" type="text/css" />', '') }}
{%- endblock notebook_css -%}
"""  # noqa: E501 - the links must match Voilà's template character for character


def parse_tabs(text: str | None) -> list[str] | None:
    """A comma list of tab names, checked; None or "" means every tab."""
    if not text or not text.strip():
        return None
    names = [t.strip().replace("-", "_") for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TABS]
    if unknown:
        raise ValueError(f"--tabs: unknown tab {unknown[0]!r}; choose from {','.join(TABS)}")
    return names


def check_port(port: int, ip: str = LOOPBACK) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port: {port} is not a port number (1-65535)")
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family) as s:  # Voilà would quietly move to another port; say so instead
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as exc:
            raise ValueError(f"--port: {port} cannot be used on {ip} ({exc.strerror}); choose another") from None
    return port


@dataclass(frozen=True)
class Listen:
    """Where the page is served and the token a browser needs (None: none, on the loopback address only)."""

    ip: str
    token: str | None

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.ip).is_loopback

    def url(self, port: int) -> str:
        host = socket.gethostname() if self.ip in ("0.0.0.0", "::") else self.ip
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")


def check_listen(ip: str | None, token: str | None) -> Listen:
    """The address to serve on and its token. The loopback address (the default) needs none: only this machine
    reaches it. Any other address is served with a token, made here when none is given, never without."""
    ip = (ip or LOOPBACK).strip()
    if ip == "localhost":
        ip = LOOPBACK
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(
            f"--ip: {ip!r} is not an IP address; give one of this machine's (0.0.0.0: every network it is on)"
        ) from None
    if token is not None and len(token.strip()) < MIN_TOKEN:
        raise ValueError(f"--token: use at least {MIN_TOKEN} characters, or leave --token out and one is made")
    listen = Listen(ip, token.strip() if token else None)
    if not listen.loopback and not listen.token:
        listen = Listen(ip, secrets.token_urlsafe(18))  # 24 characters a browser must bring
    return listen


def check_options(port: int, runs: str, tabs: str | None, preset: str | None, ip: str = LOOPBACK) -> dict:
    """Every option checked before a server starts; ValueError names the bad one. Returns the kernel's env."""
    from workbench.core.config import preset_config

    names = parse_tabs(tabs)
    if not str(runs).strip():
        raise ValueError("--runs: give a folder, not an empty value")
    runs_dir = check_writable_dir(Path(runs), "--runs").resolve()  # the kernel runs in notebooks/
    check_port(port, ip)
    try:
        preset_config(preset)
    except ValueError as exc:
        raise ValueError(f"--{exc}") from None
    env = {ENV_RUNS: str(runs_dir), ENV_TABS: ",".join(names or TABS)}
    if preset:
        env[ENV_PRESET] = preset
    return env


def has_screen() -> bool:
    """As the Makefile's LAB_BROWSER decides: no X or Wayland display (and not a Mac) means no browser to open."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or platform.system() == "Darwin"


def write_template(root: Path) -> Path:
    """The offline template under root/voila/templates (root goes on JUPYTER_PATH)."""
    folder = root / "voila" / "templates" / TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conf.json").write_text('{"base_template": "lab"}\n', encoding="utf-8")
    (folder / "index.html.j2").write_text(TEMPLATE_INDEX, encoding="utf-8")
    return root


def voila_command(port: int, open_browser: bool, listen: Listen | None = None) -> list[str]:
    listen = listen or Listen(LOOPBACK, None)
    cmd = [sys.executable, "-m", "voila", str(NOTEBOOK), f"--port={port}", f"--template={TEMPLATE}"]
    # an explicit port is the one a tunnel or a bookmark points at: fail rather than move
    cmd += ["--Voila.port_retries=0", "--strip_sources=True", "--show_tracebacks=True", f"--Voila.ip={listen.ip}"]
    if listen.token:  # Voilà's token login, as Jupyter servers have it: ?token=... once, then a cookie
        cmd.append(f"--token={listen.token}")
    if not open_browser:
        cmd.append("--no-browser")
    return cmd


def app_env(options_env: dict, template_root: Path, base: dict | None = None) -> dict:
    """The server's environment: the fast allocator as `make lab` starts it, the options, and the template's folder."""
    from workbench.machine.allocator import preload_env

    env = preload_env(base)
    env.update(options_env)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(template_root), env.get("JUPYTER_PATH", "")) if p)
    return env


def serve(port: int, options_env: dict, open_browser: bool, listen: Listen | None = None) -> int:
    """Run the Voilà server until it ends (Ctrl-C); returns its exit status."""
    listen = listen or Listen(LOOPBACK, None)
    if not listen.loopback:
        print(
            f"workbench: serving the page to the network at {listen.url(port)}\n"
            "  give the class this link: the token in it is the password (without it the page asks for it)"
        )
    elif not open_browser:
        print(f"workbench: no screen here to open a browser on; open {listen.url(port)} (through an SSH tunnel)")
    with tempfile.TemporaryDirectory(prefix="workbench-voila-") as tmp:
        env = app_env(options_env, write_template(Path(tmp)))
        proc = subprocess.Popen(voila_command(port, open_browser, listen), env=env)
        # a SIGTERM (a service manager, `timeout`) ends the server too, not only this process
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Voilà has its own Ctrl-C handling; wait for it to shut its kernels down
            try:
                return proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return 130
