"""Questions files: turning a data source (GSM8K JSONL, a NegRL questions file, the star-graph
generator) into the `{id, question, answer, solution}` records every stage reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")


def gsm8k_question(record: dict, question_id: str) -> dict:
    """A GSM8K line -> question record. The reference keeps the full solution (`#### N` ends it);
    the synthetic positive is the solution without calculator annotations."""
    try:
        question, answer = record["question"], record["answer"]
    except KeyError as missing:
        raise ValueError(f"GSM8K record {question_id} has no field {missing}") from None
    if "####" not in answer:
        raise ValueError(f"GSM8K record {question_id}: answer does not end in '#### N'")
    solution = CALCULATOR_ANNOTATION.sub("", answer)
    return {"id": question_id, "question": question, "answer": answer, "solution": solution}


def negrl_question(record: dict, question_id: str) -> dict:
    missing = {"question", "answer"} - record.keys()
    if missing:
        raise ValueError(f"question {question_id}: missing field(s) {sorted(missing)}")
    return {"id": str(record.get("id", question_id)), "question": record["question"],
            "answer": record["answer"], "solution": record.get("solution")}


def read_source(path: str | Path, kind: str, prefix: str, limit: int | None = None) -> Iterator[dict]:
    convert = {"gsm8k-jsonl": gsm8k_question, "questions-jsonl": negrl_question}[kind]
    with open(path) as handle:
        count = 0
        for line_number, line in enumerate(handle):
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            yield convert(json.loads(line), f"{prefix}-{line_number}")
            count += 1


def write_questions(path: str | Path, questions: Iterable[dict]) -> int:
    """Write atomically (temp file + rename); returns the number of records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    count = 0
    with open(temporary, "w") as handle:
        for question in questions:
            handle.write(json.dumps(question, sort_keys=True) + "\n")
            count += 1
    temporary.replace(path)
    return count
