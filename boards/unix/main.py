# Entry point of the emulated pump: micropython boards/unix/main.py [--code DIR] [options]
# (normally started by `pumpctl emulate`, which creates the pseudo-terminal).
# --code DIR: the same modules compiled to native code (pumpctl/nativecode.py)
# are imported from DIR, before the sources.
import sys

_here = sys.path[0]
sys.path.insert(1, _here + "/../../firmware")
_argv = sys.argv[1:]
_code = "source"
if _argv[:1] == ["--code"] and len(_argv) > 1:
    sys.path.insert(0, _argv[1])
    _code = "native"
    _argv = _argv[2:]

import emulator  # noqa: E402

emulator.main(_argv, _code)
