import pytest

from negrl_sampler.serving.transformers_server import cut_at_stop, take_batch


@pytest.mark.parametrize("text,stop,expected", [
    ("a b\nc", ["\n"], ("a b", True)),
    ("a b c", ["\n"], ("a b c", False)),
    ("x END y STOP", ["STOP", "END"], ("x ", True)),
    ("abc", [], ("abc", False)),
    ("abc", [""], ("abc", False)),
])
def test_cut_at_stop(text, stop, expected):
    assert cut_at_stop(text, stop) == expected


def request(max_tokens=6, temperature=1.0, n=1, name=""):
    return {"prompt": name, "max_tokens": max_tokens, "temperature": temperature, "n": n}


def test_take_batch_groups_equal_sampling_parameters_in_order():
    a, b, c, d = request(name="a"), request(temperature=0.0, name="b"), request(name="c"), request(8, name="d")
    batch, rest = take_batch([a, b, c, d], max_rows=16)
    assert [r["prompt"] for r in batch] == ["a", "c"]
    assert [r["prompt"] for r in rest] == ["b", "d"]


def test_take_batch_caps_rows_but_always_takes_the_first():
    big, small, other = request(n=10, name="big"), request(n=4, name="small"), request(n=7, name="other")
    batch, rest = take_batch([big, small, other], max_rows=8)
    assert [r["prompt"] for r in batch] == ["big"]  # over the cap alone: served anyway
    batch, rest = take_batch([small, other, request(n=4, name="fits")], max_rows=8)
    assert [r["prompt"] for r in batch] == ["small", "fits"]
    assert [r["prompt"] for r in rest] == ["other"]
