"""The rollout gateway: A/B split by consistent hashing, stages, quality monitor, rollback.

It depends on nothing but two OpenAI-compatible endpoints (control = full precision,
treatment = quantized), so it works in front of vLLM, llama.cpp or any other server.
"""

from quantship.rollout.config import RolloutConfig, load_config

__all__ = ["RolloutConfig", "load_config"]
