"""The approved debug toolbox's image reference on the local stack: the one place naming it.

The demo's config approves it, kubesim's demo fixture (``fixtures/demo.yaml``) runs a local
shell for it, and the tests use it, so the demo approves the same kind of reference as
production: the toolbox of ``images/debug-toolbox`` pinned by digest.

The digest is a placeholder of the right form, not that of a published image: no container
engine runs on the development machines, so the image is not built here. An installation
builds, signs and publishes the image and approves *its* digest (images/debug-toolbox/README.md);
the placeholder only has to agree across the local stack, which tests/test_toolbox_image.py
checks.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TOOLBOX_IMAGE"]

TOOLBOX_IMAGE: Final = (
    "registry.example.com/debug-toolbox@sha256:"
    "3f1a0c8e5b7d9a2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5"
)
