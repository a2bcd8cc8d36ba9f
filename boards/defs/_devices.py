"""Resources of the devices the boards carry, as nextpnr counts them (shared by the board files).

Counts are the devices' data-sheet figures; a build's report takes nextpnr's own
``available`` figure where nextpnr gives one (its I/O count depends on the package).
"""

from ..registry import DeviceResource as R

__all__ = ["UP5K_SG48", "HX1K_TQ144", "LP8K_CM81", "ECP5_85F_BG381", "ECP5_25F_MG285", "GW1NR9_QN88"]


def _ice40(lc, ebr, io, dsp=0, spram=0):
    out = {"LUT": R("ICESTORM_LC", "logic cells (LUT4 + FF)", lc)}
    if dsp:
        out["DSP"] = R("ICESTORM_DSP", "SB_MAC16 DSP blocks", dsp)
    out["EBR"] = R("ICESTORM_RAM", "4 Kbit block RAMs", ebr)
    if spram:
        out["SPRAM"] = R("ICESTORM_SPRAM", "256 Kbit SPRAMs", spram)
    out["IO"] = R("SB_IO", "I/O cells", io)
    return out


def _ecp5(lut, mult, ebr, io):
    return {"LUT": R("TRELLIS_COMB", "LUT4s", lut),
            "DSP": R("MULT18X18D", "18x18 multipliers", mult),
            "EBR": R("DP16KD", "18 Kbit block RAMs", ebr),
            "IO": R("TRELLIS_IO", "I/O cells", io)}


#: iCE40UP5K in the SG48 package (iCEBreaker, UPduino v3, iCESugar).
UP5K_SG48 = _ice40(5280, 30, 39, dsp=8, spram=4)
#: iCE40HX1K in the TQ144 package (iCEstick): no DSP, no SPRAM.
HX1K_TQ144 = _ice40(1280, 16, 96)
#: iCE40LP8K in the CM81 package (TinyFPGA BX): no DSP, no SPRAM.
LP8K_CM81 = _ice40(7680, 32, 63)
#: ECP5 LFE5U-85F in the CABGA381 package (ULX3S 85F).
ECP5_85F_BG381 = _ecp5(83640, 156, 208, 197)
#: ECP5 LFE5U-25F in the csfBGA285 package (OrangeCrab r0.2 25F).
ECP5_25F_MG285 = _ecp5(24288, 28, 56, 118)
#: Gowin GW1NR-9C in the QN88P package (Tang Nano 9K); its DSPs are left unused (see the board file).
GW1NR9_QN88 = {"LUT": R("LUT4", "LUT4s", 8640),
               "EBR": R("BSRAM", "18 Kbit block RAMs", 26),
               "IO": R("IOB", "I/O cells", 71)}
