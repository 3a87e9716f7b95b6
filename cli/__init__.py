"""cli: the ``mercato`` command (click).

Talks to a running daemon through node's `ControlClient`, or to the data dir
through node's public surface when no daemon runs. No business logic here.
"""

from ._main import main as main

__all__ = ["main"]
