"""The firmware's shared modules (wire codec, command table, event types,
hard limits), imported from firmware/ by path so the host and the pump run
the same code and cannot drift."""
import sys

from pumpctl import mpshim, paths

_FIRMWARE = str(paths.ROOT / "firmware")
if _FIRMWARE not in sys.path:
    sys.path.insert(0, _FIRMWARE)  # the flat names the firmware uses: events, units, ...
if "micropython" not in sys.modules:
    # limits.py uses micropython.const, an identity function under CPython.
    try:
        import micropython  # noqa: F401
    except ImportError:
        sys.modules["micropython"] = mpshim

import alarms  # noqa: E402
import events  # noqa: E402
import implant  # noqa: E402  (the implant steps' limits: catheter segments, serial)
import limits  # noqa: E402
import link_commands  # noqa: E402
import prescription  # noqa: E402  (the pump's own bolus and priming arithmetic)
import units as fw_units  # noqa: E402  (firmware/units.py: the pump's own rounding)
import wire  # noqa: E402

__all__ = ["alarms", "events", "fw_units", "implant", "limits", "link_commands", "prescription", "wire"]
