"""The system packages setup needs, by the command each provides, under Debian's and Ubuntu's names.

The one table of them: `scripts/setup.sh --servers` installs what is missing through
`python -m quantship.envs.system_packages install build tests` (apt-get as root, else
through `sudo -n`), and `quantship setup llama.cpp` refuses with the same names before
a build starts. Ubuntu has no `chromium` package: its `chromium-browser` is a shim that
installs the snap (so it needs snapd) and provides the `chromium-browser` command.
Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from quantship.errors import InputError


@dataclass(frozen=True)
class Need:
    what: str  # as a user would name it
    commands: tuple[str, ...]  # any one of them on PATH satisfies the need
    debian: str
    ubuntu: str


GROUPS: dict[str, tuple[Need, ...]] = {
    # Compiling llama.cpp (`quantship setup llama.cpp`); build-essential brings make too.
    "build": (
        Need("cmake", ("cmake",), "cmake", "cmake"),
        Need("a C compiler", ("cc",), "build-essential", "build-essential"),
        Need("a C++ compiler", ("c++",), "build-essential", "build-essential"),
    ),
    # The tests of the rollout store's shared mode, of the report in a browser, of the
    # Kubernetes manifests against the Argo Rollouts / prometheus-operator schemas (npm), and
    # of the pods' init and startup-probe commands (sha256sum, curl), run as the pods run them.
    "tests": (
        Need("redis-server", ("redis-server",), "redis-server", "redis-server"),
        Need("chromium", ("chromium", "chromium-browser"), "chromium", "chromium-browser"),
        Need("npm", ("npm",), "npm", "npm"),
        Need("curl", ("curl",), "curl", "curl"),
        Need("sha256sum", ("sha256sum",), "coreutils", "coreutils"),
    ),
}


def distro(os_release: Path = Path("/etc/os-release")) -> str | None:
    """'ubuntu' (and its derivatives), 'debian', or None for anything without apt names we know."""
    fields = {}
    try:
        for line in os_release.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip().strip('"')
    except OSError:
        return None
    family = {fields.get("ID", ""), *fields.get("ID_LIKE", "").split()}
    return "ubuntu" if "ubuntu" in family else "debian" if "debian" in family else None


def missing(*groups: str) -> list[Need]:
    return [need for group in groups for need in GROUPS[group] if not any(shutil.which(c) for c in need.commands)]


def package_names(needs: list[Need], family: str | None) -> list[str]:
    names = [need.ubuntu if family == "ubuntu" else need.debian for need in needs]
    return list(dict.fromkeys(names))


def apt_prefix() -> list[str] | None:
    """How to run apt-get here: directly as root, through passwordless sudo, or not at all."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0:
        return ["sudo", "-n"]
    return None


def problem(needs: list[Need], family: str | None, purpose: str) -> InputError:
    """One line: what is missing, the packages, the command that installs them."""
    whats = ", ".join(need.what for need in needs)
    packages = " ".join(package_names(needs, family))
    if family is None:
        fix = f"install them with your package manager (Debian names: {packages})"
    else:
        fix = f"install them: `sudo apt-get install -y {packages}`"
    return InputError(f"{purpose} needs {whats}, not found on PATH", fix)


def require(group: str, purpose: str) -> None:
    """Raise the one-line error when a command of `group` is missing (installs nothing)."""
    if needs := missing(group):
        raise problem(needs, distro(), purpose)


def install(*groups: str) -> None:
    """apt-get install what `groups` lack where that is allowed; else the one-line error."""
    needs = missing(*groups)
    if not needs:
        return
    family, prefix = distro(), apt_prefix()
    if family is not None and prefix is not None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        packages = package_names(needs, family)
        print(f"installing system packages: {' '.join(packages)}", file=sys.stderr)
        subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *packages], env=env, check=False)
        needs = missing(*groups)
    if needs:
        how = "" if prefix is not None else (
            " (no apt-get here)" if shutil.which("apt-get") is None else " (apt-get needs root or passwordless sudo)")
        raise problem(needs, family, f"quantship's setup{how}")


if __name__ == "__main__":
    try:
        if len(sys.argv) < 3 or sys.argv[1] != "install" or not set(sys.argv[2:]) <= set(GROUPS):
            raise InputError("usage: python -m quantship.envs.system_packages install GROUP...", f"groups: {', '.join(GROUPS)}")
        install(*sys.argv[2:])
    except InputError as error:
        print(error.one_line(), file=sys.stderr)
        sys.exit(error.exit_code)
