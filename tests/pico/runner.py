# Runs Pico board tests under the MicroPython unix port: runner.py VARIANT MODULE TEST...
# The stand-in `machine` and `rp2` (standins/) come first on the path, then
# the portable core and boards/pico: from source ("src") or as the
# cross-compiled .mpy files that ship to a Pico ("mpy").
import sys

here = sys.path[0]
root = here + "/../.."
variant = sys.argv[1]
base = root if variant == "src" else root + "/build/mpy"
sys.path[1:1] = [here + "/standins", base + "/firmware", base + "/boards/pico"]

module = __import__(sys.argv[2])
if variant == "mpy":
    import pico_board

    assert pico_board.__file__.endswith(".mpy"), pico_board.__file__
failed = 0
for name in sys.argv[3:]:
    try:
        getattr(module, name)()
        print("PASS", name)
    except Exception as e:
        failed += 1
        print("FAIL", name)
        sys.print_exception(e)
sys.exit(1 if failed else 0)
