"""gptviz: a from-scratch GPT that shows every intermediate tensor of its forward pass."""
from gptviz.config import GPTConfig
from gptviz.edges import Edges
from gptviz.interventions import Patch, Site
from gptviz.loading import MODEL_NAMES, available_offline, default_model_name, load_model
from gptviz.model import GPT, KVCache
from gptviz.sampling import (
    NextTokenDistribution,
    SamplingSettings,
    Step,
    choose,
    generate,
    greedy_token,
    make_generator,
    next_token_distribution,
    sample_token,
)
from gptviz.trace import Trace, trace

__all__ = [
    "GPT",
    "Edges",
    "GPTConfig",
    "KVCache",
    "MODEL_NAMES",
    "NextTokenDistribution",
    "Patch",
    "SamplingSettings",
    "Site",
    "Step",
    "Trace",
    "available_offline",
    "choose",
    "default_model_name",
    "generate",
    "greedy_token",
    "load_model",
    "make_generator",
    "next_token_distribution",
    "sample_token",
    "trace",
]
