"""Star graphs G(d, l): the didactic path-finding task of Bachmann & Nagarajan ("The pitfalls of
next-token prediction") that Setlur et al. use to show per-step credit at work.

A source node has `degree` arms, each a chain of `path_length - 1` further nodes. The question is the
shuffled edge list, then the source and the goal (the leaf of one arm); the answer is the path from
source to goal. A teacher-forced model learns to follow edges but has to guess the first move, so
its accuracy sits near 1/degree; the first move is the critical step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

EDGE_SEPARATOR = "|"
QUERY_SEPARATOR = "/"
PROMPT_TEMPLATE = "{question} ="


@dataclass(frozen=True)
class StarGraph:
    edges: tuple[tuple[int, int], ...]
    source: int
    goal: int
    path: tuple[int, ...]


def star_graph(rng: random.Random, degree: int, path_length: int, nodes: int) -> StarGraph:
    """One random graph; node labels are distinct draws from range(nodes)."""
    needed = 1 + degree * (path_length - 1)
    if degree < 2 or path_length < 2 or nodes < needed:
        raise ValueError(f"star graph needs degree >= 2, path_length >= 2 and nodes >= {needed}")
    labels = rng.sample(range(nodes), needed)
    source, rest = labels[0], labels[1:]
    arms = [rest[i * (path_length - 1):(i + 1) * (path_length - 1)] for i in range(degree)]
    edges = [(a, b) for arm in arms for a, b in zip([source, *arm[:-1]], arm, strict=True)]
    rng.shuffle(edges)
    target_arm = arms[rng.randrange(degree)]
    return StarGraph(tuple(edges), source, target_arm[-1], (source, *target_arm))


def render_question(graph: StarGraph) -> str:
    edges = f" {EDGE_SEPARATOR} ".join(f"{a} {b}" for a, b in graph.edges)
    return f"{edges} {QUERY_SEPARATOR} {graph.source} {graph.goal}"


def render_path(path: tuple[int, ...] | list[int]) -> str:
    return " ".join(str(node) for node in path)


def star_graph_questions(count: int, degree: int, path_length: int, nodes: int, seed: int, prefix: str):
    """`count` question records ({id, question, answer, solution}); the answer is the path."""
    rng = random.Random(seed)
    for index in range(count):
        graph = star_graph(rng, degree, path_length, nodes)
        path = render_path(graph.path)
        yield {"id": f"{prefix}-{index}", "question": render_question(graph), "answer": path, "solution": path}

