"""What several test files share: paths, random networks, and stream drivers for Amaranth's simulator.

Fixtures live in conftest.py; plain functions and hypothesis strategies live here, so a test
file imports them (``from helpers import ...``) instead of importing another test file.
"""

from pathlib import Path

import numpy as np
from amaranth.sim import Simulator
from hypothesis import strategies as st

from pwlnet import ir

__all__ = ["REPO", "REGRESSION", "BOARD_MODELS", "random_blocks", "nets", "compiled", "ball_points", "models",
           "far_apart", "send", "receive", "run_streams"]

#: The repository's root, the golden regression vectors and the models the repository ships.
REPO = Path(__file__).resolve().parents[1]
REGRESSION = REPO / "tests" / "regression"
BOARD_MODELS = REPO / "boards" / "models"


# ---- random networks --------------------------------------------------------------------

def random_blocks(seed, d, hidden, n_out):
    """A random ReLU MLP as blocks; weights scaled so activations neither vanish nor blow up."""
    rng = np.random.default_rng(seed)
    dims = [d, *hidden, n_out]
    blocks = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        act = "none" if i == len(dims) - 2 else "relu"
        blocks.append((rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.5, act))
    return blocks


#: hypothesis: random ReLU MLPs as blocks.
nets = st.builds(random_blocks, st.integers(0, 2**31 - 1), st.integers(2, 6),
                 st.lists(st.integers(8, 32), min_size=1, max_size=3), st.integers(1, 4))


def compiled(seed, d, hidden, n_out=3, requant="shift"):
    """A random float ReLU MLP, its compiled model and its code-space blocks."""
    from pwlnet.code_cache import code_blocks
    from pwlnet.quantize import quantize

    layers = []
    for w, b, act in random_blocks(seed, d, hidden, n_out):
        layers.append(ir.Dense(w, b))
        if act == "relu":
            layers.append(ir.Activation("relu"))
    net = ir.Network(layers, (d,))
    calib = np.random.default_rng(seed + 1).normal(size=(256, d))
    model = quantize(net, calib, requant=requant)
    return net, model, code_blocks(model, net)


#: hypothesis: arguments of :func:`compiled` (seed, d, hidden).
models = st.builds(lambda seed, d, hidden: (seed, d, hidden), st.integers(0, 2**20), st.integers(2, 6),
                   st.lists(st.integers(8, 32), min_size=1, max_size=3))


def ball_points(rng, c, bound, metric, n=24):
    """Integer points at integer distance <= bound from c, most of them on the bound itself."""
    from pwlnet.code_cache import distance

    d = c.size
    pts = [c.copy()]
    for _ in range(n):
        v = rng.normal(size=d)
        if metric == "linf":
            q = np.round(v / np.abs(v).max() * bound).astype(np.int64)
            q[np.argmax(np.abs(v))] = np.sign(v[np.argmax(np.abs(v))]) * bound
            pts += [c + q, c + rng.choice([-1, 1], size=d) * bound]      # and a corner
        elif metric == "l1":
            q = np.trunc(v / np.abs(v).sum() * bound).astype(np.int64)
            k = np.argmax(np.abs(v))
            q[k] += (np.sign(v[k]) or 1) * (bound - np.abs(q).sum())
            pts += [c + q]
        else:
            q = np.trunc(v / np.linalg.norm(v) * np.sqrt(bound)).astype(np.int64)
            for k in rng.permutation(d):          # push outward while still inside
                step = 1 if v[k] >= 0 else -1
                while ((q + step * np.eye(d, dtype=np.int64)[k]) ** 2).sum() <= bound:
                    q[k] += step
            pts += [c + q]
    pts = np.array(pts)
    assert np.all(distance(pts, c, metric) <= bound)
    return pts


def far_apart(model, blocks, metric, n, rng):
    """``n`` cache entries at random codes, none of whose balls holds another's center."""
    from pwlnet.code_cache import make_entry

    chosen = []
    while len(chosen) < n:
        e = make_entry(model, blocks, rng.integers(-128, 128, size=model.input_dim), metric)
        if all(not a.hits(e.center) and not e.hits(a.center) for a in chosen):
            chosen.append(e)
    return chosen


# ---- streams in Amaranth's simulator --------------------------------------------------

async def send(ctx, port, payloads, *, rng=None, gap=0.0, on_taken=None):
    """Offer each payload on the stream ``port`` until it is taken.

    Before each beat, idle cycles are inserted while ``rng.random() < gap``.  ``valid``
    is dropped after every taken beat (and raised again in the same cycle when the next
    beat follows at once).  ``on_taken(index)`` is called as each beat is taken.
    """
    for k, payload in enumerate(payloads):
        while rng is not None and rng.random() < gap:
            await ctx.tick()
        ctx.set(port.payload, payload)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        if on_taken is not None:
            on_taken(k)
        ctx.set(port.valid, 0)


async def receive(ctx, port, done, on_beat, *, rng=None, stall=0.0):
    """Take beats from the stream ``port`` until ``done()``; ``on_beat(payload)`` for each.

    ``ready`` is drawn every cycle: low when ``rng.random() < stall``.
    """
    while not done():
        ready = int(rng is None or rng.random() >= stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if ready and valid:
            on_beat(payload)


def run_streams(dut, *testbenches, period=1e-6):
    """Run ``dut`` in Amaranth's simulator with a clock and the given testbenches.

    Each testbench is a callable taking the simulator context and returning an awaitable
    (an async function, or a lambda around :func:`send` / :func:`receive`).
    """
    sim = Simulator(dut)
    sim.add_clock(period)
    for make in testbenches:
        async def testbench(ctx, make=make):
            await make(ctx)
        sim.add_testbench(testbench)
    sim.run()
