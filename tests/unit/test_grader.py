"""The grader end to end: API, worker pool, deadlines, memory caps and adversarial inputs.

Every adversarial input must come back as a Grade (never an exception, never ``correct``) within
its deadline plus a start-up margin, and the pool must keep serving afterwards."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import pydantic
import pytest

from negrl_sampler.grading import command as grade_command
from negrl_sampler.grading.grader import Grade, Grader, grade

DEADLINE = 1.0
SLACK = 4.0  # replacing a killed worker and first start of the forkserver
SLOW_DET = "\\det\\begin{pmatrix}" + "\\\\".join(
    "&".join("abcdefgh"[(r + c) % 8] for c in range(8)) for r in range(8)
) + "\\end{pmatrix}"


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, deadline_s=DEADLINE, memory_mb=512) as g:
        g.grade("\\boxed{x+1}", "1+x", "math")  # start the workers outside the timed tests
        yield g


def timed(grader, response, reference, task="math"):
    start = time.monotonic()
    result = grader.grade(response, reference, task)
    return result, time.monotonic() - start


def test_grade_record_contract():
    g = grade("#### 18", "Janet...\n#### 18")
    assert g == Grade(correct=True, extracted="18", reason="match")
    assert g.model_dump() == {"correct": True, "extracted": "18", "reason": "match"}
    with pytest.raises(pydantic.ValidationError):
        g.correct = False  # frozen


def test_module_level_grade_uses_the_pool_for_symbolic_work():
    assert grade("\\boxed{\\frac{\\pi}{4}}", "\\pi/4", "math").correct is True
    assert grade("\\boxed{3\\sqrt{2}}", "3\\sqrt{3}", "math").correct is False


def test_batch_mixes_fast_and_symbolic_items_in_order(grader):
    items = [
        ("#### 7", "7", None),
        ("\\boxed{(x+1)^2}", "x^2+2x+1", "math"),
        ("Path: 1 -> 2 -> 3", "1 2 3", "sequence"),
        ("\\boxed{(x-1)^2}", "x^2+2x+1", "math"),
        ("no answer here", "\\frac12", "math"),
        ("Path: 2 1 3", "1 2 3", "sequence"),
    ]
    grades = grader.grade_many(items)
    assert [g.correct for g in grades] == [True, True, True, False, None, False]
    assert grades[4].reason == "no-answer"


def test_counters(grader):
    before = grader.counters
    grader.grade_many([("#### 1", "1", None), ("#### 2", "1", None), ("hmm", "x", "math")])
    after = grader.counters
    assert set(after) >= {"graded", "correct", "wrong", "unparseable", "timeouts", "worker_restarts"}
    assert after["graded"] - before["graded"] == 3
    assert after["correct"] - before["correct"] == 1
    assert after["wrong"] - before["wrong"] == 1
    assert after["unparseable"] - before["unparseable"] == 1


def test_deadline_kills_and_replaces_the_worker(grader):
    restarts = grader.counters["worker_restarts"]
    result, seconds = timed(grader, "\\boxed{" + SLOW_DET + "}", "5")
    assert result.correct is None and result.reason == "timeout"
    assert seconds < DEADLINE + SLACK
    assert grader.counters["timeouts"] >= 1
    assert grader.counters["worker_restarts"] == restarts + 1
    assert grader.grade("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "math").correct is True


def test_a_batch_with_slow_items_keeps_the_others(grader):
    items = [("\\boxed{" + SLOW_DET + "}", "5", "math")] * 2 + [("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", "math")] * 6
    start = time.monotonic()
    grades = grader.grade_many(items)
    assert time.monotonic() - start < 2 * DEADLINE + SLACK
    assert [g.reason for g in grades[:2]] == ["timeout", "timeout"]
    assert all(g.correct is True for g in grades[2:])


def test_workers_run_under_an_address_space_cap(grader):
    grader.grade("\\boxed{x}", "y", "math")
    pids = [w.process.pid for w in grader.pool.idle]
    assert pids
    for pid in pids:
        with open(f"/proc/{pid}/limits") as limits:
            line = next(ln for ln in limits if ln.startswith("Max address space"))
        assert line.split()[3] == str(512 * 1024 * 1024)


def test_memory_error_in_symbolic_work_is_blocked(monkeypatch):
    import negrl_sampler.grading.symbolic as symbolic

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(symbolic, "decide", exhausted)
    assert symbolic.judge("x", "y") == (None, "blocked:memory")


def test_a_worker_killed_mid_job_is_unparseable_and_replaced():
    # What the kernel does to a worker that breaks its cap outside Python's allocator.
    with Grader(workers=1, deadline_s=10.0) as single:
        single.grade("\\boxed{x}", "y", "math")
        pid = single.pool.idle[0].process.pid
        results = []
        worker = threading.Thread(target=lambda: results.append(single.grade("\\boxed{" + SLOW_DET + "}", "5", "math")))
        worker.start()
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        worker.join(timeout=10)
        assert results[0].correct is None and results[0].reason == "worker-died"
        assert single.counters["worker_restarts"] == 1
        assert single.grade("\\boxed{2x}", "x+x", "math").correct is True


INJECTIONS = [
    "__import__('os').system('touch {marker}')",
    "\\boxed{{__import__('os').system('touch {marker}')}}",
    "$open('{marker}', 'w').write('x')$",
    "\\boxed{{().__class__.__base__.__subclasses__()}}",
    "\\boxed{{exec(\"open('{marker}','w')\")}}",
    "\\boxed{{eval('1+1')}}",
    "\\boxed{{lambda: open('{marker}', 'w')}}",
    "\\boxed{{\\text{{{{}}}}.__class__}}",
    "#### {{__import__('os').system('touch {marker}')}}",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_never_execute(grader, tmp_path, payload):
    marker = tmp_path / "pwned"
    response = payload.format(marker=marker)
    for task in ("math", "gsm8k", "sequence"):
        result, seconds = timed(grader, response, "12345", task)
        assert result.correct is not True
        assert seconds < DEADLINE + SLACK
    assert not marker.exists()


ADVERSARIAL = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "factorial of a tower": "\\boxed{10^{10^{10}}!}",
    "huge power": "\\boxed{2^{10^{6}}}",
    "nested braces 100k": "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
    "unclosed braces 100k": "\\boxed{" + "{" * 100_000,
    "five megabytes": "x" * 5_000_000 + "\\boxed{1}",
    "many boxes": "\\boxed{1" * 50_000,
    "nul bytes": "\x00\\boxed{\x00\\frac{1}{0}\x00}\x00",
    "odd unicode": "\\boxed{\u202e\u0663\ud800\U0001f600\u200b\ufeff}",
    "division by zero": "\\boxed{\\frac{1}{0}}",
    "zero over zero": "\\boxed{0/0}",
    "huge matrix": "\\boxed{\\begin{pmatrix}" + "\\\\".join(["1&" * 199 + "1"] * 200) + "\\end{pmatrix}}",
    "slow determinant": "\\boxed{" + SLOW_DET + "}",
    "long digits": "\\boxed{" + "9" * 5000 + "}",
    "deep parentheses": "\\boxed{" + "(" * 500 + "1" + ")" * 500 + "}",
    "catastrophic regex bait": "The answer is " + "1 " * 200_000 + "x",
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_inputs_return_in_time_and_are_never_correct(grader, name):
    for task in ("math", "gsm8k"):
        result, seconds = timed(grader, ADVERSARIAL[name], "5", task)
        assert isinstance(result, Grade)
        assert result.correct is not True
        assert seconds < DEADLINE + SLACK, (name, task, seconds, result.reason)


def test_pool_keeps_serving_and_memory_stays_bounded_after_the_adversarial_set(grader):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grader.grade_many([(text, "5", "math") for text in ADVERSARIAL.values()])
    grades = grader.grade_many([("\\boxed{x^2-1}", "(x-1)(x+1)", "math")] * 8)
    assert all(g.correct is True for g in grades)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert rss_after - rss_before < 300 * 1024  # KiB: the parent never holds a blown-up value


def test_threads_share_one_grader(grader):
    results = []

    def work():
        results.extend(grader.grade_many([("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", "math")] * 5))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(g.correct is True for g in results)


def test_bad_inputs_are_grades_not_exceptions(grader):
    assert grader.grade(None, "1").reason == "bad-input"
    assert grader.grade("1", "1", "chess").reason == "unknown-task"


def test_cli_adds_fields_and_prints_a_summary(tmp_path, capsys, monkeypatch):
    lines = [
        {"response": "so #### 18", "answer": "x\n#### 18"},
        {"response": "\\boxed{\\frac{\\pi}{2}}", "answer": "\\pi/2", "task": "math", "id": 7},
        {"response": "Path: 3 -> 1", "answer": "3 17"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert grade_command.main([str(source), "--deadline", "2"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["correct"] for r in records] == [True, True, False, None]
    assert records[1]["id"] == 7 and records[1]["extracted"] == "\\frac{\\pi}{2}"
    assert records[3]["reason"] == "bad-line"
    assert "graded=4" in err and "correct=2" in err


def test_cli_reads_stdin_through_the_negrl_command():
    line = json.dumps({"response": "The answer is 5.", "answer": "5"})
    done = subprocess.run(
        [sys.executable, "-m", "negrl_operator.cli", "grade"],
        input=line + "\n", capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["correct"] is True
    assert "graded=1" in done.stderr


def test_hot_path_touches_neither_sympy_nor_a_subprocess():
    code = (
        "import sys\n"
        "from negrl_sampler.grading.grader import grade\n"
        "assert grade('#### 1,234', 'x\\n#### 1234').correct\n"
        "assert grade('The answer is $0.5$.', '\\\\frac{1}{2}', 'math').correct\n"
        "assert grade('Path: 3 -> 17', '3 17', 'sequence').correct\n"
        "import multiprocessing\n"
        "assert 'sympy' not in sys.modules and not multiprocessing.active_children()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
