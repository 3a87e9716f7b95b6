"""bootstrap: the relay/bootstrap host mode and its deployment files. Not built yet.

Shares p2p's protocols; never imports node.
"""

__all__: list[str] = []
