# Integrity checksum of safety-critical integers (the loaded prescription),
# computed on the tick path (housekeeping): every intermediate must be a
# small int on the RP2040, where anything above 2^30 is a heap-allocated long
# int. See docs/integers.md.
#
# Design: each value is split into two 14-bit limbs (bits 0-13, 14-27), and
# each limb stream gets its own polynomial hash modulo the prime P < 2^15:
# lane = (lane * K + limb) % P. lane < P and K < P, so lane * K + limb
# < (2^15 - 1)^2 + 2^14 < 2^30. The two lanes pack into one int < 2^30.
#
# Why a single changed value is always detected: the values are hashed in a
# fixed order and number (whole arrays, not just their used part), so a
# value v at stream position j adds limb * K^(m - j) to its lane. If v
# changes to another value in [0, 2^28), one of its limbs changes by d with
# 0 < |d| < 2^14 < P, and that lane changes by d * K^(m - j) mod P, which is
# not 0 because P is prime and neither d nor K is a multiple of P. A value
# outside [0, 2^28) (negative, or a flipped high bit) makes the result
# INVALID, which no sealed checksum equals. No legitimate prescription value
# comes near 2^28 (the largest is the basal period, 43,200,000).
# K is a primitive root of P, so a value moved to another position (K^i !=
# K^j for i != j < P - 1) is detected too; random damage to several values
# escapes with probability about 2^-30.
from micropython import const

P = const(32749)  # the largest prime below 2^15
K = const(19997)  # a primitive root modulo P
START = const(1)  # lanes (1, 0): the hash of nothing
INVALID = const(-1)  # a value outside the checked range was seen
_LIMB_MASK = const(0x3FFF)
_LIMB_BITS = const(14)
_LANE_MASK = const(0x7FFF)
_LANE_BITS = const(15)
_VALUE_BITS = const(28)


def of_value(value, acc):
    # Adds one value to the checksum `acc` (START to begin); allocation-free
    # for every small int.
    if acc < 0 or value >> _VALUE_BITS:
        return INVALID
    lo = (acc & _LANE_MASK) * K + (value & _LIMB_MASK)
    hi = (acc >> _LANE_BITS) * K + (value >> _LIMB_BITS)
    return lo % P | (hi % P) << _LANE_BITS


def of_array(arr, acc):
    # Adds every element of `arr`, used or not: a fixed-length stream.
    # of_value written out in the loop, the two lanes kept apart: housekeeping
    # runs this over every array of the prescription every 5 minutes, and it
    # was most of the emulator's cost at low flows (issue #18). Same arithmetic.
    # Iterating the array itself, not indexes, halves the time; the iterator
    # lives on the stack, not the heap (tests/firmware/test_tick_allocation.py).
    if acc < 0:
        return INVALID
    lo = acc & _LANE_MASK
    hi = acc >> _LANE_BITS
    for value in arr:
        if value >> _VALUE_BITS:  # negative too: -1
            return INVALID
        lo = (lo * K + (value & _LIMB_MASK)) % P
        hi = (hi * K + (value >> _LIMB_BITS)) % P
    return lo | hi << _LANE_BITS
