# The integrity checksum (firmware/checksum.py) is the hash its header
# defines, against a reference written here from that definition: each value
# split into two 14-bit limbs, each limb stream hashed on its own lane as
# lane = (lane * K + limb) mod P, the lanes packed as lo | hi << 15; a value
# outside [0, 2^28) makes the result INVALID for good.
# mprun: native
import array
import random

import checksum

P = 32749
K = 19997
CASES = 400


def ref_checksum(values, acc):
    if acc < 0:
        return -1
    lo, hi = acc & 0x7FFF, acc >> 15
    for v in values:
        if v < 0 or v >= 1 << 28:
            return -1
        lo = (lo * K + v % (1 << 14)) % P
        hi = (hi * K + v // (1 << 14)) % P
    return lo + hi * (1 << 15)


def random_value():
    r = random.randrange(10)
    if r == 0:
        return random.choice((0, 1, (1 << 28) - 1, (1 << 14) - 1, 1 << 14, P, K))
    if r == 1:
        return random.choice((-1, -random.randrange(1, 1 << 29), 1 << 28, (1 << 29) + random.randrange(1000)))
    return random.randrange(0, 1 << 28)


def test_an_array_checksum_is_the_defined_hash():
    random.seed(5)
    for _ in range(CASES):
        values = [random_value() for _ in range(random.randrange(0, 12))]
        acc = random.choice((checksum.START, -1, random.randrange(0, 1 << 30)))
        arr = array.array("i", values)
        assert checksum.of_array(arr, acc) == ref_checksum(values, acc), (values, acc)


def test_a_value_checksum_is_the_defined_hash():
    random.seed(6)
    for _ in range(CASES):
        v = random_value()
        acc = random.choice((checksum.START, -1, random.randrange(0, 1 << 30)))
        assert checksum.of_value(v, acc) == ref_checksum([v], acc), (v, acc)


def test_values_one_by_one_and_as_an_array_give_the_same_checksum():
    random.seed(7)
    for _ in range(CASES // 4):
        values = [random.randrange(0, 1 << 28) for _ in range(random.randrange(1, 12))]
        acc = checksum.START
        for v in values:
            acc = checksum.of_value(v, acc)
        assert checksum.of_array(array.array("i", values), checksum.START) == acc
