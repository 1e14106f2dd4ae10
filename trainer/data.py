"""Training examples: records in, token ids and loss masks out.

A prompt and its response are tokenised separately and joined, so the boundary between them is
exact; prompt tokens get the label IGNORE and take no part in any loss. Truncation is explicit
(`fit`): the response keeps its head, the prompt keeps its tail, and a response that is cut loses
its EOS. The rejected side of a per-step pair is a prefix of a response and gets no EOS, unless the
pair says `rejected_eos` (a finished negative whose every prefix recovers: the mistake is the stop).

Prompts are tokenised the way the sampler's server tokenised them (with the tokenizer's special
tokens, e.g. BOS); a prompt rendered here through the model's chat template already contains them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from negrl_operator.api.artifact import read_jsonl, read_records
from negrl_operator.api.stage_config import PromptSpec
from negrl_trainer.loss import IGNORE


@dataclass(frozen=True)
class Encoded:
    """One prompt+response sequence: `labels` is IGNORE on the prompt, the token id on the response."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    truncated: bool = False

    @property
    def response_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass(frozen=True)
class EncodedPair:
    chosen: Encoded
    rejected: Encoded

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated


@dataclass(frozen=True)
class PromptText:
    """A prompt ready to tokenise; `special` says whether the tokenizer adds its special tokens."""

    text: str
    special: bool = True


@dataclass(frozen=True)
class Demonstration:
    prompt: PromptText
    response: str


@dataclass(frozen=True)
class Preference:
    prompt: PromptText
    chosen: str
    rejected: str
    rejected_eos: bool  # False for a per-step pair: the rejected side is a prefix


def fit(prompt_len: int, response_len: int, max_length: int) -> tuple[int, int]:
    """How many prompt tokens (from the end) and response tokens (from the start) to keep.

    Nothing is cut when both fit. Otherwise the response keeps what the prompt leaves, but at
    least half of max_length (when it is that long); the prompt is cut from the left to make room."""
    if prompt_len + response_len <= max_length:
        return prompt_len, response_len
    response_keep = min(response_len, max(max_length - prompt_len, max_length // 2))
    return max_length - response_keep, response_keep


def join(prompt_ids: list[int], response_ids: list[int], prompt_keep: int, max_length: int) -> Encoded:
    """Prompt (its last `prompt_keep` tokens) + response (cut to fit max_length), labels masked."""
    kept_prompt = prompt_ids[len(prompt_ids) - prompt_keep:]
    kept_response = response_ids[: max_length - len(kept_prompt)]
    truncated = len(kept_prompt) < len(prompt_ids) or len(kept_response) < len(response_ids)
    return Encoded(
        input_ids=tuple(kept_prompt + kept_response),
        labels=tuple([IGNORE] * len(kept_prompt) + kept_response),
        truncated=truncated,
    )


def encode_demonstration(tokenizer, example: Demonstration, max_length: int) -> Encoded:
    prompt_ids = prompt_token_ids(tokenizer, example.prompt)
    response_ids = response_token_ids(tokenizer, example.response, eos=True)
    prompt_keep, _ = fit(len(prompt_ids), len(response_ids), max_length)
    return join(prompt_ids, response_ids, prompt_keep, max_length)


def encode_preference(tokenizer, example: Preference, max_length: int) -> EncodedPair:
    """Both sides share one prompt cut, so the two log-probabilities condition on the same tokens."""
    prompt_ids = prompt_token_ids(tokenizer, example.prompt)
    chosen_ids = response_token_ids(tokenizer, example.chosen, eos=True)
    rejected_ids = response_token_ids(tokenizer, example.rejected, eos=example.rejected_eos)
    prompt_keep, _ = fit(len(prompt_ids), max(len(chosen_ids), len(rejected_ids)), max_length)
    return EncodedPair(
        chosen=join(prompt_ids, chosen_ids, prompt_keep, max_length),
        rejected=join(prompt_ids, rejected_ids, prompt_keep, max_length),
    )


def prompt_token_ids(tokenizer, prompt: PromptText) -> list[int]:
    return list(tokenizer(prompt.text, add_special_tokens=prompt.special)["input_ids"])


def response_token_ids(tokenizer, response: str, *, eos: bool) -> list[int]:
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"]) if response else []
    if eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token: set one in the model folder's tokenizer_config.json")
        ids.append(tokenizer.eos_token_id)
    return ids


def render_question(tokenizer, spec: PromptSpec, question: str) -> PromptText:
    """PromptSpec.render, wrapped in the model's chat template when asked for and it has one."""
    text = spec.render(question)
    if spec.chat_template and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return PromptText(rendered, special=False)
    return PromptText(text)


def demonstration(record: dict, tokenizer, spec: PromptSpec) -> Demonstration:
    """{prompt, response} (a Demonstration record) or {question, solution} (synthetic SFT data)."""
    if "prompt" in record and "response" in record:
        return Demonstration(PromptText(record["prompt"]), record["response"])
    if "question" in record and record.get("solution") is not None:
        return Demonstration(render_question(tokenizer, spec, record["question"]), record["solution"])
    raise ValueError(
        f"an sft/rft record needs {{prompt, response}} or {{question, solution}}; got keys {sorted(record)}"
    )


def preference(record: dict) -> Preference:
    """A PreferencePair record; `kind` "step" marks a prefix rejected side (no EOS), "outcome" (the
    default when absent) a full response."""
    missing = {"prompt", "chosen", "rejected"} - set(record)
    if missing:
        raise ValueError(f"a dpo record needs prompt, chosen and rejected; missing {sorted(missing)}")
    kind = record.get("kind", "outcome")
    if kind not in {"step", "outcome"}:
        raise ValueError(f"unknown preference kind {kind!r} (expected 'step' or 'outcome')")
    eos = record.get("rejected_eos")
    return Preference(PromptText(record["prompt"]), record["chosen"], record["rejected"],
                      kind == "outcome" if eos is None else bool(eos))


def read_data(paths: Iterable[str]) -> Iterator[dict]:
    """Records of every `data` entry in order: a .jsonl file, or a finished stage folder."""
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            yield from read_records(path)
        elif path.exists():
            yield from read_jsonl(path)
        else:
            raise FileNotFoundError(f"training data {entry} does not exist")


@dataclass(frozen=True)
class DataSummary:
    examples: int
    truncated: int
    response_tokens: int


class EmptyDataError(ValueError):
    """No example to train on (e.g. an RFT stage whose policy never answered correctly)."""


def encode_records(records: Iterable[dict], tokenizer, *, stage: str, spec: PromptSpec, max_length: int,
                   max_examples: int | None = None) -> list[Encoded] | list[EncodedPair]:
    """Records -> encoded examples for `stage` (sft/rft: Encoded, dpo: EncodedPair)."""
    encoded = []
    for record in records:
        if max_examples is not None and len(encoded) >= max_examples:
            break
        if stage == "dpo":
            encoded.append(encode_preference(tokenizer, preference(record), max_length))
        else:
            encoded.append(encode_demonstration(tokenizer, demonstration(record, tokenizer, spec), max_length))
    if not encoded:
        raise EmptyDataError("the training data holds no examples")
    return encoded


def summarise(examples: list[Encoded] | list[EncodedPair]) -> DataSummary:
    def tokens(example) -> int:
        if isinstance(example, EncodedPair):
            return example.chosen.response_tokens + example.rejected.response_tokens
        return example.response_tokens

    return DataSummary(
        examples=len(examples),
        truncated=sum(example.truncated for example in examples),
        response_tokens=sum(tokens(example) for example in examples),
    )
