"""Mutation operators Cosmic Ray lacks and the core logic needs: a dropped `raise`, and
`in` / `not in` swapped. Registered as the `bookingsync` provider by mutation.run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import parso
from cosmic_ray.operators.operator import Example, Operator
from parso.python.tree import Keyword

Position = tuple[tuple[int, int], tuple[int, int]]


class RemoveRaise(Operator):  # type: ignore[misc]
    """`raise X` becomes `pass`: the guard no longer refuses anything."""

    def mutation_positions(self, node: Any) -> Iterator[Position]:
        if node.type == "raise_stmt":
            yield (node.start_pos, node.end_pos)

    def mutate(self, node: Any, index: int) -> Any:
        assert index == 0
        return Keyword("pass", node.start_pos, prefix=node.get_first_leaf().prefix)

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return (Example("def f():\n    raise ValueError('x')\n", "def f():\n    pass\n"),)


class _ReplaceMembership(Operator):  # type: ignore[misc]
    from_op = ""
    to_op = ""

    def _points(self, node: Any) -> list[Any]:
        if node.type != "comparison":
            return []
        return [child for child in node.children[1::2] if child.get_code().strip() == self.from_op]

    def mutation_positions(self, node: Any) -> Iterator[Position]:
        for point in self._points(node):
            yield (point.start_pos, point.end_pos)

    def mutate(self, node: Any, index: int) -> Any:
        point = self._points(node)[index]
        replacement = parso.parse(f"a {self.to_op} b").children[0].children[1]
        replacement.get_first_leaf().prefix = point.get_first_leaf().prefix
        node.children[node.children.index(point)] = replacement
        replacement.parent = node
        return node

    @classmethod
    def examples(cls) -> tuple[Example, ...]:
        return (Example(f"a {cls.from_op} b", f"a {cls.to_op} b"),)


class ReplaceInWithNotIn(_ReplaceMembership):
    from_op = "in"
    to_op = "not in"


class ReplaceNotInWithIn(_ReplaceMembership):
    from_op = "not in"
    to_op = "in"


OPERATORS: dict[str, type[Operator]] = {
    "RemoveRaise": RemoveRaise,
    "ReplaceInWithNotIn": ReplaceInWithNotIn,
    "ReplaceNotInWithIn": ReplaceNotInWithIn,
}


class Provider:
    """The `bookingsync/...` operators, as a Cosmic Ray operator provider."""

    def __iter__(self) -> Iterator[str]:
        return iter(OPERATORS)

    def __getitem__(self, name: str) -> type[Operator]:
        return OPERATORS[name]
