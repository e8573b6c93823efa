# Entry point of the emulated pump: micropython boards/unix/main.py [options]
# (normally started by `pumpctl emulate`, which creates the pseudo-terminal).
import sys

_here = sys.path[0]
sys.path.insert(1, _here + "/../../firmware")

import emulator  # noqa: E402

emulator.main(sys.argv[1:])
