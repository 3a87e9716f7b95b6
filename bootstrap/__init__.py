"""bootstrap: what an operator needs to run a relay host on a VPS.

The relay itself is a role of the one daemon (`mercato node start --role relay`,
composed in node/, its protocol in p2p/_relay.py). This package holds only its
deployment files: `mercato-relay.service` (a hardened systemd unit),
`Containerfile`, and `install.sh` (fresh VPS to running relay). README.md,
"Operating a relay", walks through them.
"""

__all__: list[str] = []
