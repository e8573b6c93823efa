# Where a sealed request's time goes on the pump (issue #18): a STATUS
# request and its reply taken apart, stage by stage. MicroPython; shared by
# tools/bench_link_stages.py (unix port) and tools/rp2emu/onboard_bench.py
# (the emulated RP2040, which gets this file copied beside it).
import struct
import time
from binascii import crc32
from hashlib import sha256

import link_commands as lc
import wire

KEY = bytes(range(32))  # a session key: the stages do not depend on its value


def _median_us(fn, rounds):
    out = []
    for _ in range(rounds):
        t = time.ticks_us()
        fn()
        out.append(time.ticks_diff(time.ticks_us(), t))
    out.sort()
    return out[rounds // 2]


def stages(link, rounds):
    # Medians in microseconds: unframe (COBS, CRC, header), open (ChaCha20-
    # Poly1305), CBOR decode, the reply cache's digest, the command, then
    # the reply: CBOR encode, seal, CRC, COBS. Returns (stages, reply bytes).
    request = wire.Session(KEY).seal(lc.STATUS, 7, None)
    raw = wire.cobs_decode(request)
    end = wire.HEADER_LEN + struct.unpack_from(">H", raw, 9)[0]
    counter = struct.unpack_from(">I", raw, 5)[0]
    opener = wire._Sealer(KEY, True)
    sealer = wire._Sealer(KEY, True)
    buf = bytearray(wire.MAX_FRAME)
    out = bytearray(wire.MAX_FRAME)
    reply = link._status(None)
    enc = wire._Encoder(out, wire.HEADER_LEN, True)  # as Session.seal: map keys from the cache

    def open_():
        buf[:len(raw)] = raw
        opener.open(buf, end, counter)

    def encode():
        enc.pos = wire.HEADER_LEN
        enc.value(reply, 0)

    encode()
    n = enc.pos - wire.HEADER_LEN
    sealed = memoryview(out)[:wire.HEADER_LEN + n + wire.TAG_LEN]
    result = {
        "unframe": _median_us(lambda: wire._unframe(request, buf), rounds),
        "open": _median_us(open_, rounds),
        "cbor_decode": _median_us(lambda: wire.loads(memoryview(buf)[wire.HEADER_LEN:end]), rounds),
        "reply_cache_digest": _median_us(lambda: sha256(wire.dumps(None)).digest(), rounds),
        "command": _median_us(lambda: link._status(None), rounds),
        "cbor_encode": _median_us(encode, rounds),
        "seal": _median_us(lambda: sealer.seal(out, wire.HEADER_LEN + n, 1), rounds),
        "crc": _median_us(lambda: crc32(sealed), rounds),
        "cobs_encode": _median_us(lambda: wire.cobs_encode(memoryview(out)[:len(sealed) + wire.CRC_LEN]), rounds),
    }
    return result, n
