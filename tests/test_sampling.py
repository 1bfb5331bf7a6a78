"""Temperature, top-k and top-p over the full vocabulary."""
from __future__ import annotations

import pytest
import torch

from gptviz.sampling import SamplingSettings, choose, make_generator, next_token_distribution, token_rank
from numerics import assert_close

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])


def test_plain_softmax_keeps_everything():
    dist = next_token_distribution(LOGITS)
    assert dist.kept.all()
    assert_close(dist.filtered, torch.softmax(LOGITS, -1), ulps=8)  # the same softmax


def test_temperature_scales_logits():
    dist = next_token_distribution(LOGITS, SamplingSettings(temperature=0.5))
    assert_close(dist.probs, torch.softmax(LOGITS / 0.5, -1), ulps=8)  # the same softmax
    hot = next_token_distribution(LOGITS, SamplingSettings(temperature=1e6))
    assert_close(hot.probs, torch.full((6,), 1 / 6), rtol=1e-5)  # an approximation: logits / 1e6 differ by 3e-6


def test_temperature_zero_is_greedy():
    dist = next_token_distribution(LOGITS, SamplingSettings(temperature=0))
    assert dist.kept.sum() == 1 and dist.filtered[5] == 1
    step = choose(LOGITS, SamplingSettings(temperature=0), make_generator(0))
    assert step.token_id == 5 and step.rank == 1


def test_top_k_keeps_the_k_most_likely():
    dist = next_token_distribution(LOGITS, SamplingSettings(top_k=2))
    assert dist.kept.tolist() == [True, False, False, False, False, True]
    assert_close(dist.filtered.sum(), 1.0, ulps=8)  # two probabilities renormalised, summed
    assert next_token_distribution(LOGITS, SamplingSettings(top_k=6)).kept.all()
    assert next_token_distribution(LOGITS, SamplingSettings(top_k=1000)).kept.all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.softmax(LOGITS, -1)  # sorted: 3.0 (0.56), 2.0 (0.21), 1.0 (0.08) ...
    dist = next_token_distribution(LOGITS, SamplingSettings(top_p=0.7))
    assert dist.kept.tolist() == [True, False, False, False, False, True]
    assert probs[5] < 0.7 <= probs[5] + probs[0]
    assert next_token_distribution(LOGITS, SamplingSettings(top_p=0.0)).kept.sum() == 1
    assert next_token_distribution(LOGITS, SamplingSettings(top_p=1.0)).kept.all()


def test_sampling_draws_only_kept_tokens_and_is_seeded():
    settings = SamplingSettings(temperature=2.0, top_k=3)
    draws = [choose(LOGITS, settings, make_generator(s)).token_id for s in range(200)]
    assert set(draws) <= {5, 0, 1} and len(set(draws)) == 3
    assert draws == [choose(LOGITS, settings, make_generator(s)).token_id for s in range(200)]


def test_rank_and_bad_settings():
    assert token_rank(torch.softmax(LOGITS, -1), 4) == 6
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=1.5), dict(temperature=float("nan"))):
        with pytest.raises(ValueError):
            SamplingSettings(**bad)
