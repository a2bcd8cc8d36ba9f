"""The binary layer engine: XNOR-popcount datapaths for binarized networks
(:class:`BinaryEngine`), its plan (:class:`BinaryPlan`) and its popcount tree."""

from .engine import BinaryEngine
from .plan import BinaryPlan
from .popcount import PopcountTree

__all__ = ["BinaryEngine", "BinaryPlan", "PopcountTree"]
