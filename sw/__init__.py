"""pwlnet: piecewise-linear neural networks to bit-exact FPGA datapaths.

The package root is the software half (``sw/`` in the repository): import,
quantization, the golden model, the host driver and the command line.  The
hardware generators live in :mod:`pwlnet.hw`, the cocotb benches in
:mod:`pwlnet.sim` and the board tops in :mod:`pwlnet.boards`.
"""

__version__ = "0.1.0"
