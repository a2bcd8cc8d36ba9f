"""The folded MLP engine (:class:`MLPEngine`), its blocks and its plan (:class:`EnginePlan`).

:mod:`.plan` is the pure-Python part (what the engine computes from a model: descriptor
table, weight words, channel parameters, cycle counts); software that only needs those
numbers uses it without building hardware.
"""

from .engine import EngineSignature, MLPEngine, output_layout, weight_write_layout
from .plan import (EBR_WEIGHT_BUDGET, ENGINE_ACTIVATIONS, WEIGHT_MEMORIES, EnginePlan, check_activations,
                   ideal_cycles, pack_weight_words, requant_offset)

__all__ = ["MLPEngine", "EngineSignature", "weight_write_layout", "WEIGHT_MEMORIES", "ENGINE_ACTIVATIONS", "output_layout", "EnginePlan",
           "EBR_WEIGHT_BUDGET", "check_activations", "ideal_cycles", "pack_weight_words", "requant_offset"]
