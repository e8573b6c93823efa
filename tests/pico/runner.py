# Runs Pico board tests under the MicroPython unix port: runner.py VARIANT MODULE TEST...
# The stand-in `machine` and `rp2` (standins/) come first on the path, then
# the portable core and boards/pico: from source ("src") or as the
# cross-compiled .mpy files that ship to a Pico ("mpy").
import sys

here = sys.path[0]
root = here + "/../.."
variant = sys.argv[1]
base = root if variant == "src" else root + "/build/mpy"
sys.path[1:1] = [here + "/standins", base + "/firmware", base + "/boards/pico", here + "/.."]

import mptest  # noqa: E402

mptest.run(sys.argv[2], sys.argv[3:], "pico_board" if variant == "mpy" else None)
