"""cocotb test module for binarized models: :mod:`pwlnet.sim.engine_tb`'s bench (driver,
monitor, in-order checker, cycle measurement) with :func:`pwlnet.binary.forward` as the
reference model.  Run by :func:`pwlnet.sim.runner.run` for a model of kind ``"binary"``."""

from pwlnet import binary
from pwlnet.sim import engine_tb
from pwlnet.sim.engine_tb import run_vectors  # noqa: F401 - the cocotb test cocotb discovers here

__all__ = ["run_vectors"]


def _reference(job, model, codes):
    return binary.forward(model, codes)


# The bench's reference is the one thing that differs for a binary model.
engine_tb._reference = _reference
