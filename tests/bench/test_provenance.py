"""The machine and date every benchmark JSON carries."""

from __future__ import annotations

import time

from quantship.bench import provenance as prov


def test_host_kind_without_systemd_detect_virt(tmp_path, monkeypatch):
    monkeypatch.setattr(prov.shutil, "which", lambda tool: None)
    monkeypatch.setattr(prov, "cpuinfo", lambda: ("Xeon", {"avx2"}))
    assert prov.host_kind(tmp_path / "no-dockerenv") == "bare metal"
    (tmp_path / ".dockerenv").write_text("")
    monkeypatch.setattr(prov, "cpuinfo", lambda: ("Xeon", {"avx2", "hypervisor"}))
    assert prov.host_kind(tmp_path / ".dockerenv") == "container (docker) on virtual machine (unknown hypervisor)"


def test_systemd_detect_virt_names_the_hypervisor(tmp_path, monkeypatch):
    answers = {"--container": "none", "--vm": "kvm"}
    monkeypatch.setattr(prov.shutil, "which", lambda tool: "/usr/bin/" + tool)
    monkeypatch.setattr(prov.subprocess, "run", lambda argv, **kw: prov.subprocess.CompletedProcess(argv, 0, answers[argv[1]] + "\n"))
    assert prov.host_kind(tmp_path / "no-dockerenv") == "virtual machine (kvm)"


def test_provenance_dates_the_figures_and_keeps_the_benchmarks_own_facts(monkeypatch):
    monkeypatch.setattr(prov, "cpuinfo", lambda: ("Intel(R) Xeon(R) Platinum 8480+", set()))
    monkeypatch.setattr(prov, "host_kind", lambda: "bare metal")
    stamp = prov.provenance(torch_threads=3)
    assert abs(time.mktime(time.strptime(stamp["date"], "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())) < 120
    machine = stamp["machine"]
    assert machine["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+" and machine["torch_threads"] == 3
    assert machine["cores_logical"] == prov.os.cpu_count() and machine["host_kind"] == "bare metal"
