import random

import pytest

from negrl_sampler.stargraph import render_path, render_question, star_graph, star_graph_questions


@pytest.mark.parametrize("degree,path_length,nodes", [(2, 2, 3), (2, 4, 20), (3, 5, 40), (5, 3, 11)])
def test_graph_shape(degree, path_length, nodes):
    graph = star_graph(random.Random(1), degree, path_length, nodes)
    labels = {node for edge in graph.edges for node in edge}
    assert len(graph.edges) == degree * (path_length - 1)
    assert len(labels) == 1 + degree * (path_length - 1)
    assert labels <= set(range(nodes))
    assert sum(1 for a, _ in graph.edges if a == graph.source) == degree
    assert graph.path[0] == graph.source and graph.path[-1] == graph.goal
    assert len(graph.path) == path_length
    assert all(edge in graph.edges for edge in zip(graph.path, graph.path[1:], strict=False))


@pytest.mark.parametrize("degree,path_length,nodes", [(1, 4, 20), (2, 1, 20), (3, 4, 9)])
def test_impossible_graph_is_refused(degree, path_length, nodes):
    with pytest.raises(ValueError, match="star graph needs"):
        star_graph(random.Random(0), degree, path_length, nodes)


def test_rendering_exact():
    from negrl_sampler.stargraph import StarGraph

    graph = StarGraph(edges=((5, 7), (5, 2), (2, 9)), source=5, goal=9, path=(5, 2, 9))
    assert render_question(graph) == "5 7 | 5 2 | 2 9 / 5 9"
    assert render_path(graph.path) == "5 2 9"


def test_questions_are_deterministic_and_solution_is_the_answer():
    first = list(star_graph_questions(5, 2, 4, 20, seed=3, prefix="train"))
    again = list(star_graph_questions(5, 2, 4, 20, seed=3, prefix="train"))
    other = list(star_graph_questions(5, 2, 4, 20, seed=4, prefix="train"))
    assert first == again != other
    assert [q["id"] for q in first] == [f"train-{i}" for i in range(5)]
    assert all(q["answer"] == q["solution"] for q in first)
