"""Tokenisation, masking, truncation, collation, packing and the data order."""

import json

import pytest
import torch

from negrl_operator.api.stage_config import PromptSpec
from negrl_trainer.batch import (
    Schedule,
    collate,
    epoch_permutation,
    pack,
    packed_units,
    rank_micro_batches,
    step_indices,
)
from negrl_trainer.data import (
    Demonstration,
    Encoded,
    Preference,
    PromptText,
    demonstration,
    encode_demonstration,
    encode_preference,
    encode_records,
    fit,
    join,
    preference,
    read_data,
    render_question,
    summarise,
)
from negrl_trainer.loss import IGNORE
from negrl_trainer.objective import logits_of

WORDS = "Question: Answer: what is 1 2 3 4 5 6 7 8 9 the sum of and step so #### first then".split()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    from negrl_trainer.scratch_model import word_tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(WORDS), bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(("text", "decoded", "tokens"), [
    ("1 2 3", " 1 2 3", 3),
    (" 1 2 3", " 1 2 3", 3),                                  # a leading space is the first word's own
    ("first 1 2\nthen 3\n#### 3", " first 1 2\n then 3\n #### 3", 9),  # a line break is one token
    (" first 1 2\n then 3", " first 1 2\n then 3", 6),         # ...and the decoded text encodes the same
    ("1  2 \n\n 3", " 1 2\n 3", 4),                          # runs of spaces and blank lines fold
])
def test_word_tokenizer_keeps_words_and_line_breaks(tokenizer, text, decoded, tokens):
    encoded = ids(tokenizer, text)
    assert len(encoded) == tokens and tokenizer.unk_token_id not in encoded
    assert tokenizer.decode(encoded) == decoded
    assert ids(tokenizer, decoded) == encoded


# (prompt tokens, response tokens, max_length) -> (prompt kept, response kept)
FIT_CASES = [
    ((5, 5, 16), (5, 5)),      # fits: nothing cut
    ((4, 20, 16), (4, 12)),    # response cut to what the prompt leaves
    ((10, 20, 16), (8, 8)),    # long prompt: response keeps half of max_length, prompt cut from the left
    ((30, 3, 16), (13, 3)),    # short response kept whole, prompt cut
    ((12, 4, 16), (12, 4)),    # exactly max_length
]


@pytest.mark.parametrize(("lengths", "expected"), FIT_CASES)
def test_fit(lengths, expected):
    assert fit(*lengths) == expected
    assert sum(fit(*lengths)) <= lengths[2]


def test_join_masks_the_prompt_and_flags_truncation():
    encoded = join([1, 2, 3, 4], [5, 6, 7, 8], prompt_keep=3, max_length=5)
    assert encoded.input_ids == (2, 3, 4, 5, 6)
    assert encoded.labels == (IGNORE, IGNORE, IGNORE, 5, 6)
    assert encoded.truncated and encoded.response_tokens == 2
    assert not join([1], [2], prompt_keep=1, max_length=8).truncated


def test_prompt_and_response_are_tokenised_separately_and_joined(tokenizer):
    example = Demonstration(PromptText("Question: what is 1 and 2 Answer:"), "3 #### 3")
    encoded = encode_demonstration(tokenizer, example, max_length=64)
    prompt_ids = tokenizer("Question: what is 1 and 2 Answer:")["input_ids"]
    response_ids = ids(tokenizer, "3 #### 3")
    assert list(encoded.input_ids) == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert list(encoded.labels) == [IGNORE] * len(prompt_ids) + response_ids + [tokenizer.eos_token_id]


def test_truncated_response_loses_its_eos(tokenizer):
    example = Demonstration(PromptText("Question: 1"), "1 2 3 4 5 6 7 8 9")
    encoded = encode_demonstration(tokenizer, example, max_length=6)
    assert len(encoded.input_ids) == 6 and encoded.truncated
    assert tokenizer.eos_token_id not in encoded.input_ids


@pytest.mark.parametrize(("kind", "flag", "rejected_eos"), [
    ("step", None, False), ("outcome", None, True), ("step", True, True), ("outcome", False, False)])
def test_per_step_rejected_prefix_has_no_eos(tokenizer, kind, flag, rejected_eos):
    record = {"prompt": "Question: 1 and 2 Answer:", "chosen": "3 #### 3", "rejected": "first 4", "kind": kind}
    if flag is not None:  # a pit-L step pair (finished, every prefix recovers) keeps its EOS
        record["rejected_eos"] = flag
    pair = encode_preference(tokenizer, preference(record), max_length=64)
    eos = tokenizer.eos_token_id
    assert pair.chosen.input_ids[-1] == eos and pair.chosen.labels[-1] == eos
    assert (pair.rejected.input_ids[-1] == eos) is rejected_eos
    assert (eos in pair.rejected.input_ids) is rejected_eos
    prompt_len = len(tokenizer(record["prompt"])["input_ids"])
    assert pair.chosen.input_ids[:prompt_len] == pair.rejected.input_ids[:prompt_len]
    assert pair.rejected.labels[:prompt_len] == (IGNORE,) * prompt_len


def test_pair_sides_share_one_prompt_cut(tokenizer):
    example = Preference(PromptText("Question: 1 2 3 4 5 6 7 8"), "9 9 9 9 9 9", "1", rejected_eos=False)
    pair = encode_preference(tokenizer, example, max_length=10)
    prompt_c = [t for t, label in zip(pair.chosen.input_ids, pair.chosen.labels, strict=True) if label == IGNORE]
    prompt_r = [t for t, label in zip(pair.rejected.input_ids, pair.rejected.labels, strict=True) if label == IGNORE]
    assert prompt_c == prompt_r and len(pair.chosen.input_ids) <= 10


def test_chat_template_is_used_when_asked_for_and_present(tokenizer):
    spec = PromptSpec(template="Question: {question}", chat_template=True)
    assert render_question(tokenizer, spec, "what") == PromptText("Question: what", special=True)
    chat = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>", pad_token="<pad>")
    chat.chat_template = "{% for m in messages %}<s> {{ m['content'] }}{% endfor %} Answer:"
    rendered = render_question(chat, spec, "what")
    assert rendered == PromptText("<s> Question: what Answer:", special=False)
    plain = render_question(chat, PromptSpec(template="Question: {question}"), "what")
    assert plain == PromptText("Question: what", special=True)


def test_record_shapes(tokenizer):
    spec = PromptSpec()
    assert demonstration({"question": "q", "solution": "s", "id": "1"}, tokenizer, spec) == Demonstration(
        PromptText("Question: q\nAnswer:"), "s")
    assert demonstration({"prompt": "p", "response": "r", "question_id": "1", "source": "self"}, tokenizer, spec) \
        == Demonstration(PromptText("p"), "r")
    with pytest.raises(ValueError, match="prompt, response"):
        demonstration({"question": "q", "answer": "a"}, tokenizer, spec)
    with pytest.raises(ValueError, match="missing \\['rejected'\\]"):
        preference({"prompt": "p", "chosen": "c"})
    assert preference({"prompt": "p", "chosen": "c", "rejected": "r"}).rejected_eos


def test_encode_records_reads_files_limits_and_summarises(tokenizer, tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"question": f"what is {i}", "solution": f"{i} #### {i}"}) + "\n"
                            for i in range(1, 6)))
    examples = encode_records(read_data([str(path)]), tokenizer, stage="sft", spec=PromptSpec(), max_length=64,
                              max_examples=3)
    assert len(examples) == 3 and summarise(examples).examples == 3
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_data([str(tmp_path / "missing.jsonl")]))
    with pytest.raises(ValueError, match="no examples"):
        encode_records([], tokenizer, stage="sft", spec=PromptSpec(), max_length=64)


def seq(prompt: list[int], response: list[int]) -> Encoded:
    return Encoded(tuple(prompt + response), tuple([IGNORE] * len(prompt) + response))


def test_collate_pads_right_and_masks_padding():
    batch = collate([seq([1, 2], [3]), seq([4], [5, 6, 7])], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 0], [4, 5, 6, 7]]
    assert batch.labels.tolist() == [[IGNORE, IGNORE, 3, IGNORE], [IGNORE, 5, 6, 7]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch.tokens == 7 and batch.position_ids is None


def test_collate_pairs_puts_chosen_rows_first():
    from negrl_trainer.data import EncodedPair

    batch = collate([EncodedPair(seq([1], [2]), seq([1], [3, 4])), EncodedPair(seq([5], [6]), seq([5], [7]))], 0)
    assert batch.input_ids[:, 1].tolist() == [2, 6, 3, 7]


PACK_CASES = [
    (([5, 5, 5], 10), [[0, 1], [2]]),
    (([7, 3, 6, 4], 10), [[0, 1], [2, 3]]),
    (([10, 1], 10), [[0], [1]]),
    (([2, 2, 2, 2, 2], 4), [[0, 1], [2, 3], [4]]),
]


@pytest.mark.parametrize(("case", "expected"), PACK_CASES)
def test_pack_best_fit_decreasing(case, expected):
    lengths, max_length = case
    bins = pack(lengths, max_length)
    assert sorted(sorted(b) for b in bins) == expected
    assert all(sum(lengths[i] for i in b) <= max_length for b in bins)


def test_pack_rejects_a_too_long_sequence():
    with pytest.raises(ValueError, match="more than max_length"):
        pack([11], 10)


def test_packed_rows_restart_positions_and_never_score_across_a_boundary():
    rows = packed_units([seq([1, 2], [3, 4]), seq([], [5, 6])], max_length=8)
    batch = collate(rows, pad_id=0)
    assert batch.attention_mask is None
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1]]
    assert batch.labels.tolist() == [[IGNORE, IGNORE, 3, 4, IGNORE, 6]]


def test_packed_sequences_do_not_attend_to_each_other():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    first, second = seq([1, 2], [3, 4, 5]), seq([6], [7, 8])
    packed = collate(packed_units([first, second], max_length=16), pad_id=0)
    with torch.no_grad():
        together = logits_of(model, packed, "cpu")[0]  # the trainer's forward (no KV cache)
        alone = [model(input_ids=torch.tensor([s.input_ids])).logits[0] for s in (first, second)]
    torch.testing.assert_close(together[:8], torch.cat(alone), rtol=1e-5, atol=1e-5)


def test_step_indices_are_a_pure_function_of_seed_and_step():
    schedule = Schedule(units=10, global_batch=4, epochs=2)
    assert schedule.steps_per_epoch == 3 and schedule.total_steps == 6
    steps = [step_indices(schedule, seed=7, step=s) for s in range(6)]
    assert steps == [step_indices(schedule, seed=7, step=s) for s in range(6)]
    assert all(len(indices) == 4 for indices in steps)
    first_epoch = epoch_permutation(10, 7, 0)
    assert steps[0] + steps[1] + steps[2] == first_epoch + first_epoch[:2]  # the last batch wraps
    assert sorted(steps[3] + steps[4] + steps[5][:2]) == list(range(10))
    assert steps[:3] != steps[3:]  # each epoch has its own order


def test_schedule_total_steps():
    assert Schedule(units=10, global_batch=4, epochs=1.5).total_steps == 5
    assert Schedule(units=10, global_batch=4, epochs=3, max_steps=2).total_steps == 2
    assert Schedule(units=3, global_batch=8, epochs=0.1).total_steps == 1
    # the floor: 10 units in batches of 4 are 3 steps an epoch; 2 epochs are 6 steps, raised to 20
    assert Schedule(units=10, global_batch=4, epochs=2, min_steps=20).total_steps == 20
    assert Schedule(units=10, global_batch=4, epochs=2, min_steps=5).total_steps == 6  # epochs already give more
    assert Schedule(units=10, global_batch=4, epochs=2, min_steps=20, max_steps=8).total_steps == 8  # the cap wins


def test_rank_micro_batches_split_a_step_between_ranks():
    indices = list(range(8))
    assert rank_micro_batches(indices, rank=0, world_size=2, micro_batch=2) == [[0, 1], [2, 3]]
    assert rank_micro_batches(indices, rank=1, world_size=2, micro_batch=2) == [[4, 5], [6, 7]]
    assert rank_micro_batches(indices, rank=0, world_size=1, micro_batch=4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
