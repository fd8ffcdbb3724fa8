"""Validation of generated objects against the projects' published schemas.

Core kinds: PyPI `kubernetes-validate` (strict: unknown fields are errors). Argo
Rollouts and prometheus-operator: npm `@kubernetes-models/*` through
`deploy/schemas/validate.mjs`. Flagger: the openAPIV3Schema of its official CRD
(`deploy/schemas/flagger/crd.yaml`; Flagger publishes it on no registry).
Setup installs all of them, so under CI=true a missing one fails instead of skipping.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import yaml

from tests.support.requires import missing

SCHEMAS = Path(__file__).resolve().parents[2] / "deploy" / "schemas"
KUBERNETES_VERSION = "1.33.0"
CORE = ("v1", "apps/v1")
NPM = ("argoproj.io/v1alpha1", "monitoring.coreos.com/v1")


def _missing(what: str, fix: str) -> None:
    missing(f"{what} is missing; {fix}")


def core_errors(obj: dict) -> str | None:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate", "pip install -e '.[test]'")
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return str(error)
    return None


def npm_errors(objects: list[dict]) -> list[str | None]:
    if shutil.which("node") is None or not (SCHEMAS / "node_modules" / "@kubernetes-models").is_dir():
        _missing("node or deploy/schemas/node_modules", "run `npm ci` in deploy/schemas (scripts/setup.sh --servers)")
    done = subprocess.run(["node", str(SCHEMAS / "validate.mjs")], input=json.dumps(objects), capture_output=True,
                          text=True, timeout=120, check=True)
    return [r["error"] for r in json.loads(done.stdout)]


@lru_cache(maxsize=1)
def _flagger_schema() -> dict:
    crds = list(yaml.safe_load_all((SCHEMAS / "flagger" / "crd.yaml").read_text()))
    canary = next(c for c in crds if c and c["metadata"]["name"] == "canaries.flagger.app")
    version = next(v for v in canary["spec"]["versions"] if v["name"] == "v1beta1")
    return version["schema"]["openAPIV3Schema"]


def flagger_errors(obj: dict) -> str | None:
    import jsonschema

    errors = sorted(jsonschema.Draft7Validator(_flagger_schema()).iter_errors(obj), key=str)
    return "; ".join(e.message for e in errors) or None


def errors_of(objects: list[dict]) -> dict[str, str]:
    """kind/name -> error, for every object that fails (a kind with no known schema fails too)."""
    found: dict[str, str] = {}
    npm = [o for o in objects if o["apiVersion"] in NPM]
    for obj, error in zip(npm, npm_errors(npm) if npm else [], strict=True):
        if error:
            found[_key(obj)] = error
    for obj in objects:
        if obj["apiVersion"] in CORE:
            error = core_errors(obj)
        elif obj["apiVersion"] == "flagger.app/v1beta1":
            error = flagger_errors(obj)
        elif obj["apiVersion"] in NPM:
            continue
        else:
            error = f"no schema for {obj['apiVersion']}"
        if error:
            found[_key(obj)] = error
    return found


def _key(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"
