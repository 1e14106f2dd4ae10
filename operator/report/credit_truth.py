"""Credit against the truth on the generated arithmetic task: does the credit stage's first pit land on
the line where a negative truly goes wrong? Pure functions over credit records, RFT positives and the
problems the questions encode (`negrl_sampler.arithmetic_check` says which line is the true error).

- The true line of a negative: its first consequential error (`check_response`), the first wrong line
  its final answer depends on. A negative the checker finds right (the grader said wrong) has none
  and is counted apart (`no_true_error`), outside every rate.
- The pit's lines: the lines its step spans, counted as the checker counts them (non-empty lines of
  the response), from the text of the steps, never by assuming step i is line i. With one line per
  step (`minChars: 0`, the arithmetic example) the span is one line; a step that merged lines hits
  when the true line is among them.
- Each pit is a hit (its span holds the true line), early (it ends before the true line: a correct
  prefix scored as a pit, the false pit) or late (it starts after it). Pit precision = hits / pits,
  false-pit rate = early / pits, late-pit rate = late / pits; early and late precision split the pits
  by where the true line lies: the first half of the reference lines (line * 2 <= lines) or the rest.
- RFT positives with a wrong line and a right answer: Monte-Carlo credit never scans positives, and
  from any prefix of one the rollouts reach the right answer, so such a line is invisible to it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from negrl_operator.report.estimate import ReportError
from negrl_sampler.arithmetic import Problem
from negrl_sampler.arithmetic_check import check_response, recovery


def line_count(text: str) -> int:
    """Non-empty lines of `text` (an unterminated last piece counts: the line a prefix ends in)."""
    return sum(1 for line in text.split("\n") if line.strip())


def pit_span(steps: list[str], pit: int | None) -> tuple[int, int] | None:
    """The first and last line (1-based) the pit step's text lies on; None without a pit."""
    if pit is None:
        return None
    if not 1 <= pit <= len(steps):
        raise ValueError(f"credit record: pit {pit} outside its {len(steps)} steps; the record is corrupt")
    before, through = "".join(steps[: pit - 1]), "".join(steps[:pit])
    complete_before = sum(1 for line in before.split("\n")[:-1] if line.strip())  # newline-terminated lines
    last = line_count(through)
    return min(complete_before + 1, last), last


@dataclass(frozen=True)
class NegativeTruth:
    """One scanned negative: its true first consequential error against its pit's lines."""

    true_line: int | None          # None: the checker finds no consequential error
    lines: int                     # reference lines of the problem (events, then `####`)
    pit: tuple[int, int] | None    # first and last line of the pit step; None: no pit

    @property
    def outcome(self) -> str:
        if self.true_line is None:
            return "no_true_error"
        if self.pit is None:
            return "no_pit"
        first, last = self.pit
        return "early" if last < self.true_line else "late" if first > self.true_line else "hit"

    @property
    def early_error(self) -> bool:
        """The true line lies in the first half of the reference lines."""
        return self.true_line is not None and self.true_line * 2 <= self.lines


def judge_negative(problem: Problem, record: dict) -> NegativeTruth:
    """A credit record (steps, pit) judged against the line checker on its problem."""
    check = check_response(problem, "".join(record["steps"]))
    return NegativeTruth(check.first_consequential_error, len(problem.events) + 1,
                         pit_span(record["steps"], record["pit"]))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _histogram(values) -> dict[str, int]:
    counts = Counter(values)
    return {str(line): counts[line] for line in sorted(counts)}


def tally(judged: list[NegativeTruth]) -> dict:
    """Counts, rates (None where nothing is counted) and histograms by line over judged negatives."""
    outcomes = Counter(truth.outcome for truth in judged)
    pitted = [truth for truth in judged if truth.outcome in ("hit", "early", "late")]
    pits = len(pitted)
    early = [truth for truth in pitted if truth.early_error]
    late = [truth for truth in pitted if not truth.early_error]
    known = [truth for truth in judged if truth.true_line is not None]
    by_line = {}
    for line in sorted({truth.true_line for truth in known}):
        here = [truth for truth in known if truth.true_line == line]
        by_line[str(line)] = {"negatives": len(here), "pits": sum(t.pit is not None for t in here),
                              "hits": sum(t.outcome == "hit" for t in here)}
    return {
        "negatives": len(judged), "pits": pits, "hits": outcomes["hit"], "early_pits": outcomes["early"],
        "late_pits": outcomes["late"], "no_pit": outcomes["no_pit"], "no_true_error": outcomes["no_true_error"],
        "pit_precision": _share(outcomes["hit"], pits),
        "pit_precision_early": _share(sum(t.outcome == "hit" for t in early), len(early)),
        "pit_precision_late": _share(sum(t.outcome == "hit" for t in late), len(late)),
        "false_pit_rate": _share(outcomes["early"], pits), "late_pit_rate": _share(outcomes["late"], pits),
        "no_pit_share": _share(outcomes["no_pit"], len(known)),
        "pit_histogram": _histogram(truth.pit[1] for truth in judged if truth.pit is not None),
        "true_histogram": _histogram(truth.true_line for truth in known),
        "by_true_line": by_line,
    }


RFT_KEYS = ("rft_positives", "rft_positives_with_wrong_line", "rft_positives_with_consequential_wrong_line",
            "rft_positives_repaired")


def rft_line_errors(problems: dict[str, Problem], positives: list[dict]) -> dict:
    """RFT positives (Demonstration records) whose lines hold an error though the answer is right: any
    wrong line (`first_error`), a wrong line the answer depends on, and of those the ones a later line
    repaired (`recovery`: it wrote a count its own working does not give) rather than cancelled."""
    pairs = [(_problem(problems, p["question_id"], "rft.jsonl"), p["response"]) for p in positives]
    checks = [check_response(problem, response) for problem, response in pairs]
    counts = (len(checks), sum(c.first_error is not None for c in checks),
              sum(c.first_consequential_error is not None for c in checks),
              sum(recovery(problem, response, check) == "repair"
                  for (problem, response), check in zip(pairs, checks, strict=True)))
    return dict(zip(RFT_KEYS, counts, strict=True))


def _problem(problems: dict[str, Problem], question_id: str, source: str) -> Problem:
    if question_id not in problems:
        raise ReportError(f"{source}: question_id {question_id!r} is not among the run's training questions (D_syn: "
                          "prepare's or the teacher's train.jsonl); the report reads credit records and RFT positives "
                          "of the same run")
    return problems[question_id]


def judge_records(problems: dict[str, Problem], credit_records: list[dict]) -> list[NegativeTruth]:
    return [judge_negative(_problem(problems, r["question_id"], "credit"), r) for r in credit_records]


EXPLANATION = (
    "Each scanned negative's true first error is the first wrong line its final answer depends on, found by "
    "re-running every line against the problem (the task's line checker); its pit line is the line the credit "
    "stage's first pit step ends on (lines counted in the steps' text; a step spanning several lines hits "
    "when it holds the true line). Pit precision: pits on the true line / pits; false pits: pits on a line "
    "before it (a correct prefix scored as a pit); late pits: after it; early / late precision: pits whose "
    "true error lies in the first half of the reference lines (line <= lines / 2) / the rest. No true error: the grader said wrong, "
    "the checker finds the answer right (left out of every rate). RFT positives with a wrong line: kept "
    "positives (right answer) holding a wrong line; Monte-Carlo credit cannot flag these, because credit "
    "scans only negatives and every rollout from a prefix of such a positive can still reach the right answer. "
    "RFT positives repaired: of those, the ones whose wrong line the answer depends on, where a later line "
    "writes a count its own working does not give (rather than a second mistake cancelling the first): a policy "
    "that repairs its lines also recovers from a prefix past its mistake, which makes Monte-Carlo pits late."
)
COLUMNS = ("negatives", "pits", "pit_precision", "pit_precision_early", "pit_precision_late", "false_pit_rate",
           "late_pit_rate", "no_pit", "no_true_error", "rft_positives_with_wrong_line", "rft_positives_repaired",
           "rft_positives", "rollouts_per_negative", "tokens_per_negative")


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(seeds: dict[int, dict], pooled: dict) -> str:
    """The section "Credit against the true first error": one row per seed and the pooled row, then the
    pooled histograms by line."""
    lines = ["\n## Credit against the true first error\n", EXPLANATION + "\n",
             "| seed | " + " | ".join(column.replace("_", " ") for column in COLUMNS) + " |",
             "|" + "---|" * (len(COLUMNS) + 1)]
    for seed, row in [*seeds.items(), ("pooled", pooled)]:
        lines.append(f"| {seed} | " + " | ".join(_cell(row.get(column)) for column in COLUMNS) + " |")
    lines += ["", "By true line (pooled): line -> negatives, pits, hits (pits on that line).", "",
              "| true line | negatives | pits | hits | precision |", "|---|---|---|---|---|"]
    for line, counts in pooled.get("by_true_line", {}).items():
        lines.append(f"| {line} | {counts['negatives']} | {counts['pits']} | {counts['hits']} | "
                     f"{_cell(_share(counts['hits'], counts['pits']))} |")
    lines += ["", f"Pit lines (pooled, line -> pits): {pooled.get('pit_histogram', {})}; true lines (line -> "
              f"negatives): {pooled.get('true_histogram', {})}."]
    return "\n".join(lines) + "\n"
