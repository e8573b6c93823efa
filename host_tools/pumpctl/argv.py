"""What a pumpctl command line asks for before argparse has read it: it
imports nothing, for the entry point (pumpctl.cli) reads it while nothing
else is loaded yet."""


def json_requested(argv) -> bool:
    """True when the command line asks for --json (or an abbreviation argparse
    takes for it, such as --js), before any `--`: its errors, usage errors
    and an early Ctrl-C among them, are then JSON on standard output."""
    for a in argv:
        if a == "--":
            return False
        name = a.split("=", 1)[0]
        if len(name) >= 3 and "--json".startswith(name):
            return True
    return False
