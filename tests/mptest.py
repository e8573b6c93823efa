# The part of the MicroPython test runners that is the same for every board:
# import the test module, run the named tests, print PASS/FAIL with
# MicroPython's own traceback, exit non-zero on any failure.
import sys


def run(module_name, names, compiled_module=None):
    # compiled_module: a firmware module that must come from a .mpy file.
    module = __import__(module_name)
    if compiled_module is not None:
        m = __import__(compiled_module)
        assert m.__file__.endswith(".mpy"), m.__file__
    failed = 0
    for name in names:
        try:
            getattr(module, name)()
            print("PASS", name)
        except Exception as e:
            failed += 1
            print("FAIL", name)
            sys.print_exception(e)
    sys.exit(1 if failed else 0)
