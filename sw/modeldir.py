"""Writing a model directory (``model.json`` and ``arrays.npz``) so that it appears whole.

Both directory formats use it: the compiled MLP (:func:`pwlnet.artifact.save`) and the
binarized network (:func:`pwlnet.binary.save`).  The files are written into a temporary
directory beside the target, which then replaces the target; on any error or interrupt
the temporary directory is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["write_model_dir"]


def write_model_dir(out_dir, desc, arrays) -> Path:
    """Write ``desc`` as ``model.json`` and ``arrays`` as ``arrays.npz`` into ``out_dir``,
    replacing it as a whole; returns ``out_dir`` as a :class:`~pathlib.Path`."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with open(tmp / "model.json", "w") as f:
            json.dump(desc, f, indent=1)
            f.write("\n")
        np.savez(tmp / "arrays.npz", **arrays)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
