# Integrity checksum of safety-critical integers: a position-weighted sum
# modulo a prime below 2^29, so every intermediate stays a small int on the
# RP2040 and any change to a single value is detected (the weights are
# smaller than the prime, which is prime). Unlike a CRC it can be updated in
# O(1) when one value changes, which the ledger does on every stroke.
from micropython import const

PRIME = const(536870909)


def of_array(arr, n, weight, acc):
    # Adds arr[0..n) with weights weight, weight+1, ...; allocation-free.
    for i in range(n):
        acc = (acc + (weight + i) * (arr[i] % PRIME)) % PRIME
    return acc


def of_value(value, weight, acc):
    return (acc + weight * (value % PRIME)) % PRIME
