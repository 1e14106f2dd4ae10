"""The vLLM fixture is the real OpenAI-compatible server: n choices and seeded determinism."""

import httpx


def complete(server, **body):
    payload = {"model": server.model, "prompt": "Question: Tom has 3 apples.", "max_tokens": 12, **body}
    response = httpx.post(f"{server.base_url}/completions", json=payload, timeout=120)
    response.raise_for_status()
    return response.json()


def test_one_prompt_returns_n_choices(vllm_server):
    # ignore_eos makes every choice exactly max_tokens long, so usage is known: 4 x 12 tokens
    result = complete(vllm_server, n=4, temperature=1.0, seed=7, ignore_eos=True)
    assert sorted(choice["index"] for choice in result["choices"]) == [0, 1, 2, 3]
    assert all(choice["finish_reason"] == "length" for choice in result["choices"])
    assert result["usage"]["completion_tokens"] == 48


def test_same_seed_same_text_and_other_seed_differs(vllm_server):
    first = [c["text"] for c in complete(vllm_server, n=2, temperature=1.0, seed=123)["choices"]]
    again = [c["text"] for c in complete(vllm_server, n=2, temperature=1.0, seed=123)["choices"]]
    other = [c["text"] for c in complete(vllm_server, n=2, temperature=1.0, seed=999)["choices"]]
    assert first == again
    assert first != other
