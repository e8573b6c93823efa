# Runs firmware tests under MicroPython: mprunner.py VARIANT MODULE TEST...
# VARIANT "src" imports firmware and board sources; "mpy" imports only the
# cross-compiled .mpy files from build/mpy (what ships to a Pico).
import sys

here = sys.path[0]
root = here + "/../.."
variant = sys.argv[1]
base = root if variant == "src" else root + "/build/mpy"
sys.path[1:1] = [base + "/firmware", base + "/boards/unix"]

module = __import__(sys.argv[2])
if variant == "mpy":
    import pump

    assert pump.__file__.endswith(".mpy"), pump.__file__
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
