"""Kubernetes manifests from a run: model servers sized by the plan, the gateway, Argo/Flagger gates."""
