# amaranth: UnusedElaboratable=no
"""The engine's generated Verilog on Icarus, generic and iCE40 targets, against the golden model.

The ``"ice40"`` target instantiates ``SB_MAC16`` (and ``SB_SPRAM256KA`` for ``"ram"``
weights); these are simulated with yosys' own behavioural models, so this checks the
vendor-primitive configuration (signedness, register stages, SPRAM write/read timing)
bit for bit.  A few vectors only: the cocotb benches run the thousands.
"""

import numpy as np
import pytest

from pwlnet import golden
from pwlnet.hw.engine import MLPEngine
from pwlnet.sim.verilog_check import have_iverilog, run_iverilog
from pwlnet.synth import random_model

pytestmark = pytest.mark.skipif(not have_iverilog(), reason="iverilog not installed")


@pytest.mark.parametrize("target", ["generic", "ice40"])
@pytest.mark.parametrize("dims,lanes,requant,bits,weights", [
    ([13, 20, 7], 3, "multiply", 8, "rom"),
    ([9, 5, 2], 8, "shift", 12, "rom"),
    ([13, 20, 7], 8, "shift", 8, "ram"),
    # More lanes than the UP5K has DSPs: paired lanes (two 8x8 products per SB_MAC16) on
    # ice40, also with an odd lane count (the last DSP's top half multiplies 0).
    ([13, 20, 7], 16, "multiply", 8, "rom"),
    ([30, 20, 7], 11, "shift", 8, "rom"),
])
def test_verilog_matches_golden(tmp_path, target, dims, lanes, requant, bits, weights):
    model = random_model(3, dims, requant=requant, weight_bits=bits, act_bits=bits)
    codes = np.random.default_rng(0).integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(5, dims[0]))
    engine = MLPEngine(model, lanes, target=target, weight_memory=weights)
    assert engine.plan.mac_pairs(target) == (target == "ice40" and lanes > 8)
    out, am, _ = run_iverilog(engine, codes, workdir=tmp_path)
    want = golden.forward(model, codes)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(am, golden.argmax(want))
