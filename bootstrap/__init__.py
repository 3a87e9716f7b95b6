"""bootstrap: what an operator needs to run a relay host on a VPS.

The relay itself is a role of the one daemon (`mercato node start --role relay`,
composed in node/, its protocol in p2p/_relay.py). This package holds only its
deployment files: `mercato-relay.service` (a hardened systemd unit),
`Containerfile`, and `install.sh` (fresh VPS to running relay). They are
installed with the package; `deploy_files` reads them and `mercato node
relay-files DIR` writes them out. README.md, "Operating a relay", walks
through them.

Imports no other part of mercato.
"""

from importlib.resources import files

DEPLOY_FILES = ("mercato-relay.service", "Containerfile", "install.sh")


def deploy_files() -> dict[str, bytes]:
    """Each deployment file's name and bytes, as installed with the package."""
    here = files(__name__)
    return {name: here.joinpath(name).read_bytes() for name in DEPLOY_FILES}


__all__ = ["DEPLOY_FILES", "deploy_files"]
