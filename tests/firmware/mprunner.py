# Runs firmware tests under MicroPython: mprunner.py VARIANT MODULE TEST...
# VARIANT "src" imports firmware and board sources; "mpy" imports only the
# cross-compiled .mpy files from build/mpy (what ships to a Pico); "nat:DIR"
# imports the native build of DIR first (what the emulator runs,
# host_tools/pumpctl/nativecode.py).
import sys

here = sys.path[0]
root = here + "/../.."
variant = sys.argv[1]
if variant.startswith("nat:"):
    sys.path[1:1] = [variant[4:], root + "/firmware", root + "/boards/unix", here + "/.."]
else:
    base = root if variant == "src" else root + "/build/mpy"
    sys.path[1:1] = [base + "/firmware", base + "/boards/unix", here + "/.."]

import mptest  # noqa: E402

mptest.run(sys.argv[2], sys.argv[3:], None if variant == "src" else "pump")
