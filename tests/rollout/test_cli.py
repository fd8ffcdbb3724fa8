"""`quantship rollout` as a user runs it: one-line errors, admin verbs against a live gateway."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.gateway import TOKEN, GatewayServer, make_config


def _cli(*args: str, env_token: bool = True) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "QUANTSHIP_ROLLOUT_TOKEN"}
    if env_token:
        env["QUANTSHIP_ROLLOUT_TOKEN"] = TOKEN
    return subprocess.run([sys.executable, "-m", "quantship.cli", "rollout", *args], capture_output=True, text=True, env=env, timeout=60)


def test_bad_config_is_one_line_exit_2(tmp_path):
    missing = _cli("serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\ncontrol: {url: 'localhost:8000', model: m}\ntreatment: {url: 'http://t', model: m}\n")
    result = _cli("serve", "--config", str(bad))
    assert result.returncode == 2 and "control.url" in result.stderr and "http://" in result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("experiment: x\ncontrol: {url: 'http://c', model: m}\ntreatment: {url: 'http://t', model: m}\nthreshold: 3\n")
    assert "threshold" in _cli("serve", "--config", str(unknown)).stderr


def test_admin_verbs_drive_a_live_gateway(tmp_path, control, treatment):
    with GatewayServer(make_config(tmp_path, control.url, treatment.url, auto_promote=False)) as gw:
        status = _cli("status", "--url", gw.url)
        assert status.returncode == 0 and json.loads(status.stdout)["stage_name"] == "canary"
        promoted = _cli("promote", "--url", gw.url, "--reason", "canary looks clean")
        assert json.loads(promoted.stdout)["stage_name"] == "75%"
        assert json.loads(_cli("rollback", "--url", gw.url).stdout)["status"] == "rolled_back"
        refused = _cli("promote", "--url", gw.url)
        assert refused.returncode == 2 and "HTTP 409" in refused.stderr
        no_token = _cli("status", "--url", gw.url, env_token=False)
        assert no_token.returncode == 2 and "--token" in no_token.stderr
        wrong = _cli("status", "--url", gw.url, "--token", "wrong")
        assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr
        events = json.loads(_cli("audit", "--url", gw.url).stdout)["events"]
        assert [e["action"] for e in events] == ["promote", "rollback"] and events[0]["reasons"] == ["canary looks clean"]
