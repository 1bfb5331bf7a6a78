"""The same seed, prompt and settings give the same sampled tokens: across two independent app
sessions, and across two Python processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import gptviz
from gptviz.sampling import SamplingSettings

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PROMPT = "Once upon a time, in a small village by the sea,"
SETTINGS = dict(temperature=1.5, top_k=500, top_p=0.95)  # flat enough that a different draw shows


def sample_in_a_new_session(model: str, seed: int, clicks: int = 3) -> list[int]:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/next_token.py")
    at.session_state["prompt"] = PROMPT
    at.run()
    at.selectbox(key="model").set_value(model).run()
    at.slider(key="temperature").set_value(SETTINGS["temperature"])
    at.number_input(key="top_k").set_value(SETTINGS["top_k"])
    at.slider(key="top_p").set_value(SETTINGS["top_p"])
    at.number_input(key="seed").set_value(seed).run()
    for _ in range(clicks):
        at.button(key="sample_next").click().run()
        assert not at.exception, at.exception
    return [int(i) for i in at.session_state["gen"].split(",")]


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_two_sessions_sample_the_same_tokens(app_env, which):
    first = sample_in_a_new_session(app_env[which], seed=1234)
    second = sample_in_a_new_session(app_env[which], seed=1234)
    assert len(first) == 3 and first == second
    assert sample_in_a_new_session(app_env[which], seed=99) != first  # the seed does matter


GENERATE = """
import json, sys
import gptviz
from gptviz.sampling import SamplingSettings
model = gptviz.load_model(sys.argv[1])
ids = model.tokenizer.encode(sys.argv[2])
steps = gptviz.generate(model, ids, 12, SamplingSettings(**json.loads(sys.argv[3])), seed=int(sys.argv[4]))
print(json.dumps([s.token_id for s in steps]))
"""


def generate_in_a_new_process(model_dir: Path, seed: int) -> list[int]:
    result = subprocess.run(
        [sys.executable, "-c", GENERATE, str(model_dir), PROMPT, json.dumps(SETTINGS), str(seed)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_processes_generate_the_same_tokens(tiny_llama_dir, tiny_llama):
    first = generate_in_a_new_process(tiny_llama_dir, seed=7)
    assert first == generate_in_a_new_process(tiny_llama_dir, seed=7)
    here = gptviz.generate(tiny_llama, tiny_llama.tokenizer.encode(PROMPT), 12, SamplingSettings(**SETTINGS), seed=7)
    assert [s.token_id for s in here] == first and len(set(first)) > 1
