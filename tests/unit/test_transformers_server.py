import pytest

from negrl_sampler.transformers_server import cut_at_stop


@pytest.mark.parametrize("text,stop,expected", [
    ("a b\nc", ["\n"], ("a b", True)),
    ("a b c", ["\n"], ("a b c", False)),
    ("x END y STOP", ["STOP", "END"], ("x ", True)),
    ("abc", [], ("abc", False)),
    ("abc", [""], ("abc", False)),
])
def test_cut_at_stop(text, stop, expected):
    assert cut_at_stop(text, stop) == expected
