"""The host link: the framed protocol of :mod:`pwlnet.protocol` between the UART and the
engine, as a composition of blocks.

``rx`` bytes go through a receive FIFO into the frame parser
(:class:`~.parser.FrameParser`), which checks a whole frame and hands on a request; the
command executor (:class:`~.executor.CommandExecutor`) runs INFER, INFER_BATCH, LOAD_WEIGHTS
and CACHE_WRITE against the engine and keeps the counters; the reply serializer
(:class:`~.serializer.ReplySerializer`) sends the reply frame to ``tx``.  The contracts
between them are in :mod:`~.request`, the CRC-16 in :mod:`~.crc`, and :class:`Link`
(:mod:`~.link`) composes them.  :class:`SmallLink` (:mod:`~.small`) answers the same frames for
a build without batches, cache or loaded weights in one small state machine (the iCEstick's).
"""

from .executor import CommandExecutor
from .link import Link
from .parser import FrameParser
from .request import ExecSignature, ReplyKind, ReplySignature
from .serializer import ReplySerializer
from .small import SmallLink

__all__ = ["Link", "SmallLink", "FrameParser", "CommandExecutor", "ReplySerializer", "ReplyKind", "ReplySignature",
           "ExecSignature"]
