"""The transformers backend against a real (tiny, random) model: prompts tokenised as the trainer
tokenises them, and per-sequence seeds that make a completion independent of its batch."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from negrl_sampler.serving.transformers_server import TransformersGenerator
from negrl_trainer.data import PromptText, prompt_token_ids

WORDS = [str(number) for number in range(40)] + ["|", "/", "="]
PROMPT = "3 17 | 17 4 | 3 9 | 9 21 / 3 4 ="


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from negrl_trainer.scratch_model import build_scratch_model

    folder = build_scratch_model(tmp_path_factory.mktemp("bos-model"), words=WORDS, hidden=64, layers=1,
                                 heads=1, max_positions=64, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(folder)  # a tokenizer that adds BOS, like Llama's
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    tokenizer.save_pretrained(folder)
    return TransformersGenerator(folder)


def test_prompt_tokens_match_the_trainer_with_and_without_special_tokens(generator):
    tokenizer = generator.tokenizer
    with_bos = prompt_token_ids(tokenizer, PromptText(PROMPT))
    assert with_bos[0] == tokenizer.bos_token_id and len(with_bos) == len(PROMPT.split()) + 1
    reply = generator.complete({"prompt": PROMPT, "max_tokens": 1, "temperature": 0.0})
    assert reply["usage"]["prompt_tokens"] == len(with_bos)
    without = generator.complete({"prompt": PROMPT, "max_tokens": 1, "temperature": 0.0, "add_special_tokens": False})
    assert without["usage"]["prompt_tokens"] == len(prompt_token_ids(tokenizer, PromptText(PROMPT, special=False)))
    assert without["usage"]["prompt_tokens"] == len(with_bos) - 1


def texts(reply: dict) -> list[str]:
    return [choice["text"] for choice in reply["choices"]]


def test_completion_j_of_seed_s_is_the_completion_of_seed_s_plus_j_in_any_batch(generator):
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 1.0, "top_p": 0.95}
    together = texts(generator.complete({**body, "n": 3, "seed": 11}))
    assert len(set(together)) > 1  # a random model at temperature 1: the three draws differ
    others = [{**body, "prompt": "5 6 | 6 7 / 5 7 =", "n": 4, "seed": 99}]
    singles = [{**body, "n": 1, "seed": 11 + j} for j in range(3)]
    with ThreadPoolExecutor(len(singles) + 1) as pool:  # sent together: batched with another prompt
        replies = list(pool.map(generator.complete, singles + others))
    assert [texts(reply)[0] for reply in replies[:3]] == together
    assert texts(generator.complete({**body, "n": 3, "seed": 11})) == together
    assert texts(generator.complete({**body, "n": 3, "seed": 12}))[:2] == together[1:]
