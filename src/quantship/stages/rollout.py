"""The rollout stage: rollout/rollout.yaml for a canary gateway in front of the run's two servers.

The run leaves both servers up (serve.keep_running) and writes the gateway's config; the
gateway itself is a long-running process a person starts (`quantship rollout serve`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from quantship import layout
from quantship.options import RolloutSection
from quantship.rollout.config import RolloutConfig
from quantship.rundir import RunDir, atomic_write_text
from quantship.stages import Context, Outcome
from quantship.stages.serve import CONTROL

Options = RolloutSection
CONFIG = f"{layout.ROLLOUT}/rollout.yaml"


def needs_servers(run_dir: RunDir, options: RolloutSection | None, context: Context) -> bool:
    return options is not None and options.enabled


def run(run_dir: RunDir, options: RolloutSection | None, context: Context) -> Outcome:
    if not needs_servers(run_dir, options, context):
        return Outcome("off", "no rollout: section")
    servers = context.servers.ensure(run_dir)
    variant = next(label for label in servers if label != CONTROL)
    config = rollout_config(context.name, variant, servers[CONTROL], servers[variant], run_dir.root, options.settings)
    path = run_dir.root / CONFIG
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
    return Outcome("ran", f"start the canary gateway: quantship rollout serve --config {path}", {"rollout config": path})


def load(run_dir: RunDir) -> RolloutConfig:
    from quantship.rollout.config import load_config

    return load_config(run_dir.root / CONFIG)


def rollout_config(name: str, variant: str, control, treatment, run_root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """rollout.yaml for a gateway in front of the baseline (control) and the selected variant (treatment)."""
    config = {
        "experiment": f"{name}-{variant}",
        "control": {"url": control.base_url, "model": control.served_model_name},
        "treatment": {"url": treatment.base_url, "model": treatment.served_model_name},
        "store": f"sqlite:///{(run_root / layout.ROLLOUT / 'state.db').absolute()}",
        **settings,
    }
    return RolloutConfig.model_validate(config).model_dump(mode="json")
