import json

import pytest

from negrl_sampler.dataset import gsm8k_question, negrl_question, read_source, write_questions


def test_gsm8k_solution_drops_calculator_annotations_and_keeps_reference():
    record = {"question": "2 boxes of 3?", "answer": "2*3=<<2*3=6>>6 apples\n#### 6"}
    question = gsm8k_question(record, "train-0")
    assert question == {"id": "train-0", "question": "2 boxes of 3?",
                        "answer": "2*3=<<2*3=6>>6 apples\n#### 6", "solution": "2*3=6 apples\n#### 6"}


@pytest.mark.parametrize("record,message", [
    ({"answer": "#### 1"}, "no field 'question'"),
    ({"question": "q", "answer": "just 1"}, "does not end in '#### N'"),
])
def test_gsm8k_errors_name_the_problem(record, message):
    with pytest.raises(ValueError, match=message):
        gsm8k_question(record, "x-1")


def test_negrl_question_requires_fields():
    with pytest.raises(ValueError, match=r"missing field\(s\) \['answer'\]"):
        negrl_question({"question": "q"}, "q-0")


def test_read_and_write_roundtrip_with_limit(tmp_path):
    source = tmp_path / "src.jsonl"
    source.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(5)))
    out = tmp_path / "data" / "train.jsonl"
    assert write_questions(out, read_source(source, "gsm8k-jsonl", "train", limit=3)) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["train-0", "train-1", "train-2"]
    assert not list(out.parent.glob(".*.tmp"))
