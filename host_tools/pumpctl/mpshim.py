"""CPython stand-in for MicroPython's `micropython` module, as much of it as
the firmware's shared modules use (pumpctl.fw installs it)."""
from typing import TypeVar

T = TypeVar("T")


def const(x: T) -> T:
    """micropython.const: an identity function outside MicroPython."""
    return x


def heap_lock() -> None:
    pass


def heap_unlock() -> None:
    pass
