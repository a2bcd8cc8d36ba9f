"""Error types shared by modules that may not import each other.

The compiled model (:mod:`pwlnet.artifact`), the golden model (:mod:`pwlnet.golden`) and
the binarized networks' rule (:mod:`pwlnet.binary`) raise these; each is also reachable
under the module that first defined it (``pwlnet.artifact.ArtifactError``,
``pwlnet.golden.InputError``).
"""

__all__ = ["ArtifactError", "InputError"]


class ArtifactError(ValueError):
    """A compiled-model directory that cannot be read or is inconsistent."""


class InputError(ValueError):
    """Inputs of the wrong shape or with non-finite values."""
