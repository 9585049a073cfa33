"""What every federation scheduler plugin declares, and the order they are installed in.

distributed runs the hooks of scheduler plugins (``update_graph``, ``transition`` …) in
the order the plugins were added. Ours depend on that: the policy plugin overrides the
routing plugin's placement of what it pins, the capability plugin signs only what the
policy and trust plugins let through. Each plugin says which others it needs
(:attr:`FederationPlugin.requires`); :func:`install_order` puts every plugin after what
it requires, and the plugins find each other with
:meth:`~scheduler_plugins.state.FederationState.plugin`, never by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from distributed import SchedulerPlugin

if TYPE_CHECKING:
    from .state import FederationState


class FederationPlugin(SchedulerPlugin):
    """A scheduler plugin of the federation, built from the hub's shared state."""

    #: plugins whose state or public methods this one uses, and whose hooks must run
    #: before its own; they are installed before it
    requires: ClassVar[tuple[type[FederationPlugin], ...]] = ()

    def __init__(self, state: FederationState):
        self.state = state


def install_order(
    plugins: Iterable[type[FederationPlugin]],
) -> list[type[FederationPlugin]]:
    """``plugins`` and everything they require, each after what it requires; otherwise
    in the given order.

    Raises
    ------
    ValueError
        For plugins that require each other (naming the circle).
    """
    order: list[type[FederationPlugin]] = []

    def visit(cls: type[FederationPlugin], path: tuple[type, ...]) -> None:
        if cls in order:
            return
        if cls in path:
            circle = " -> ".join(c.__name__ for c in (*path[path.index(cls):], cls))
            raise ValueError(f"federation plugins require each other: {circle}")
        for needed in cls.requires:
            visit(needed, (*path, cls))
        order.append(cls)

    for cls in plugins:
        visit(cls, ())
    return order
