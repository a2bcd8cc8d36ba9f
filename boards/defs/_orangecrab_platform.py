"""The OrangeCrab r0.2 25F platform without the ``dfu-suffix`` step of amaranth-boards' flow.

amaranth-boards appends a DFU suffix to the bitstream with ``dfu-suffix`` (dfu-util's), which
is not on PyPI; the flow here stops at ``ecppack``'s ``.bit`` as every other ECP5 board's.
"""

from amaranth.vendor import LatticeECP5Platform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform as _Base

__all__ = ["OrangeCrab25FPlatform"]


class OrangeCrab25FPlatform(_Base):
    @property
    def required_tools(self):
        return LatticeECP5Platform.required_tools.fget(self)

    @property
    def command_templates(self):
        return LatticeECP5Platform.command_templates.fget(self)
