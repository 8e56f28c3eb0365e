"""Debian packages the test set-up installs itself (Chromium for the browser test, Prometheus for ops).

Only as root with apt-get: elsewhere the caller skips and says which package to install. As
root with apt-get, a failed install is the test set-up failing, not a reason to skip.
"""

import os
import shutil
import subprocess


def why_apt_cannot_run() -> str:
    """'' when apt-get can install packages here, else why not."""
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install it"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    return ""


def apt_install(package: str, recommends: bool = False) -> str:
    """apt-get update and install one package; '' on success, else what went wrong."""
    why = why_apt_cannot_run()
    if why:
        return why
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *([] if recommends else ["--no-install-recommends"]), package]
    for command, timeout_s in ((["apt-get", "update", "-q"], 300), (install, 900)):
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.CalledProcessError as exc:
            return f"`{' '.join(command)}` failed: {(exc.stderr or exc.stdout or '').strip()[-500:]}"
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` took more than {timeout_s} s"
    return ""
