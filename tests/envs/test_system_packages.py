"""System packages: Debian's and Ubuntu's names, who may run apt-get, the one-line refusal."""

from __future__ import annotations

import pytest

from quantship.envs import system_packages as sp
from quantship.errors import InputError

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n'
MINT = 'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\n'


@pytest.mark.parametrize(("text", "family"), [(DEBIAN, "debian"), (UBUNTU, "ubuntu"), (MINT, "ubuntu"), (FEDORA, None)])
def test_the_family_comes_from_os_release(tmp_path, text, family):
    (tmp_path / "os-release").write_text(text)
    assert sp.distro(tmp_path / "os-release") == family


def test_no_os_release_means_no_known_names(tmp_path):
    assert sp.distro(tmp_path / "absent") is None


@pytest.fixture
def on_path(monkeypatch):
    """Only the commands in the returned set are on PATH."""
    present: set[str] = set()
    monkeypatch.setattr(sp.shutil, "which", lambda tool: f"/usr/bin/{tool}" if tool in present else None)
    return present


def test_chromium_is_named_per_distribution(on_path):
    on_path.update({"cmake", "cc", "c++", "redis-server", "npm", "curl", "sha256sum"})
    needs = sp.missing("build", "tests")
    assert [need.what for need in needs] == ["chromium"]
    assert sp.package_names(needs, "debian") == ["chromium"]
    assert sp.package_names(needs, "ubuntu") == ["chromium-browser"]
    on_path.add("chromium-browser")  # Ubuntu's command name satisfies it
    assert sp.missing("tests") == []


def test_both_compilers_come_from_one_package(on_path):
    assert sp.package_names(sp.missing("build"), "debian") == ["cmake", "build-essential"]


def test_apt_is_tried_as_root_or_through_passwordless_sudo_only(on_path, monkeypatch):
    on_path.update({"apt-get", "sudo"})
    monkeypatch.setattr(sp.os, "geteuid", lambda: 0)
    assert sp.apt_prefix() == []
    monkeypatch.setattr(sp.os, "geteuid", lambda: 1000)
    asked = []

    def sudo(argv, **kwargs):
        asked.append(argv)
        return sp.subprocess.CompletedProcess(argv, returncode)

    monkeypatch.setattr(sp.subprocess, "run", sudo)
    returncode = 0
    assert sp.apt_prefix() == ["sudo", "-n"]
    returncode = 1
    assert sp.apt_prefix() is None
    assert asked == [["sudo", "-n", "true"]] * 2
    on_path.discard("apt-get")
    assert sp.apt_prefix() is None


def test_without_privileges_install_names_packages_and_command(on_path, monkeypatch):
    on_path.update({"cc", "c++", "redis-server", "npm", "curl", "sha256sum", "apt-get"})
    monkeypatch.setattr(sp, "distro", lambda: "ubuntu")
    monkeypatch.setattr(sp, "apt_prefix", lambda: None)
    monkeypatch.setattr(sp.subprocess, "run", _must_not_run)
    with pytest.raises(InputError) as raised:
        sp.install("build", "tests")
    assert raised.value.one_line() == (
        "quantship's setup (apt-get needs root or passwordless sudo) needs cmake, chromium, not found on PATH; "
        "install them: `sudo apt-get install -y cmake chromium-browser`"
    )
    assert raised.value.exit_code == 2


def test_install_runs_apt_get_for_what_is_missing_and_checks_again(on_path, monkeypatch):
    on_path.update({"cmake", "cc", "c++"})
    monkeypatch.setattr(sp, "distro", lambda: "debian")
    monkeypatch.setattr(sp, "apt_prefix", lambda: ["sudo", "-n"])
    ran = []

    def apt(argv, env, check):
        ran.append(argv)
        if "install" in argv:
            on_path.update({"redis-server", "chromium", "npm", "curl", "sha256sum"})
        return sp.subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(sp.subprocess, "run", apt)
    sp.install("build", "tests")
    assert ran == [["sudo", "-n", "apt-get", "update", "-qq"],
                   ["sudo", "-n", "apt-get", "install", "-y", "-qq", "redis-server", "chromium", "npm", "curl", "coreutils"]]


def test_a_failed_apt_install_still_ends_in_the_one_line_error(on_path, monkeypatch):
    monkeypatch.setattr(sp, "distro", lambda: "debian")
    monkeypatch.setattr(sp, "apt_prefix", lambda: [])
    monkeypatch.setattr(sp.subprocess, "run", lambda argv, **kw: sp.subprocess.CompletedProcess(argv, 100))
    with pytest.raises(InputError, match=r"^quantship's setup needs cmake, a C compiler, a C\+\+ compiler, not found"):
        sp.install("build")


def test_without_apt_get_the_line_says_so(on_path, monkeypatch):
    monkeypatch.setattr(sp, "distro", lambda: "debian")
    with pytest.raises(InputError, match=r"^quantship's setup \(no apt-get here\) needs cmake"):
        sp.install("build")


def test_other_distributions_get_the_debian_names_and_no_apt_command(on_path):
    with pytest.raises(InputError, match=r"with your package manager \(Debian names: cmake build-essential\)$"):
        raise sp.problem(sp.missing("build"), None, "building llama.cpp")


def _must_not_run(*args, **kwargs):
    raise AssertionError("apt-get ran without privileges")
