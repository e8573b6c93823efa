# ChaCha20-Poly1305 AEAD (RFC 8439) for the pump side of the programmer link
# (issue #15; docs/crypto.md). Host side: `cryptography`'s ChaCha20Poly1305,
# byte for byte the same (tests/firmware/test_aead.py).
#
#   seal(key32, nonce12, aad, plaintext) -> ciphertext || tag16
#   open(key32, nonce12, aad, ciphertext || tag16) -> plaintext, or InvalidTag
#   seal_into / open_into: the same into a caller's buffer (no allocation here)
#
# Two back ends with the same five primitives, chosen once at import:
#   "viper": @micropython.viper code, compiled at import by the runtime's own
#     native emitter from source generated below (exec), so that aead.mpy holds
#     bytecode only and loads on every port (a .mpy with armv6m machine code is
#     refused by the unix ports: "incompatible .mpy arch"). ChaCha20 in uint
#     machine words (32-bit on the RP2040 and the i386 port; 64-bit on unix
#     x64, where the generated code masks to 32 bits); Poly1305 in ten 13-bit
#     limbs so that every product and sum fits 32 bits (RP2040 MULS is 32x32->32).
#     A known-answer self-test gates it: any mismatch or error -> "python".
#   "python": plain integers (long ints on 31-bit ports: correct, slow, allocates);
#     for a runtime without a native emitter (and CPython).
# Not reentrant (module-level work buffers): call it from one context only
# (the link's frame handler), never from an interrupt or timer callback.
import gc
import struct
import sys

try:
    import micropython
except ImportError:  # CPython
    micropython = None

KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16


class InvalidTag(ValueError):
    pass


# --- viper source (generated, compiled at import) ------------------------------

_COLS = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15))
_DIAG = ((0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))


def _word(p, o):
    return "uint(%s[%s]) | uint(%s[%s]) << 8 | uint(%s[%s]) << 16 | uint(%s[%s]) << 24" % (
        p, o, p, o + 1, p, o + 2, p, o + 3)


def _limbs(t):
    # 130 bits as 16-bit words t[0..8] -> ten 13-bit limb expressions.
    out = []
    for i in range(10):
        k, s = 13 * i // 16, 13 * i % 16
        e = "%s >> %d" % (t[k], s) if s else t[k]
        if s + 13 > 16:
            e = "%s | %s << %d" % (e, t[k + 1], 16 - s)
        out.append("(%s) & 0x1fff" % e)
    return out


def _viper_sources(w64):
    # One source string per function (compiled one at a time: lower peak heap).
    m = " & M" if w64 else ""
    mask = ["    M = uint(0xffff) << 16 | uint(0xffff)"] if w64 else []
    srcs = []

    # st: 32 words; 0-15 the ChaCha20 input block, 16-31 the keystream block.
    k = ["@micropython.viper", "def _chacha_init(st: ptr32, key: ptr8, nonce: ptr8, ctr: uint):"]
    for i, c in enumerate((0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)):
        k.append("    st[%d] = uint(0x%x) << 16 | uint(0x%x)" % (i, c >> 16, c & 0xFFFF))
    k += ["    st[%d] = %s" % (4 + i, _word("key", 4 * i)) for i in range(8)]
    k.append("    st[12] = ctr")
    k += ["    st[%d] = %s" % (13 + i, _word("nonce", 4 * i)) for i in range(3)]
    srcs.append(k)

    k = ["@micropython.viper", "def _chacha_xor(st: ptr32, src: ptr8, dst: ptr8, n: int):",
         "    ks = ptr8(uint(st) + 64)"] + mask + ["    off = 0", "    while off < n:"]
    k += ["        x%d = uint(st[%d])" % (i, i) for i in range(16)]
    k.append("        for _ in range(10):")
    for a, b, c, d in _COLS + _DIAG:
        for x, y, z, r in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
            k.append("            x%d += x%d" % (x, y))
            if w64:
                k.append("            x%d &= M" % x)
            k.append("            x%d ^= x%d" % (z, x))
            k.append("            x%d = (x%d << %d | x%d >> %d)%s" % (z, z, r, z, 32 - r, m))
    k += ["        st[%d] = x%d + uint(st[%d])" % (16 + i, i, i) for i in range(16)]  # 32-bit stores
    k += ["        j = n - off",
          "        if j > 64:",
          "            j = 64",
          "        i = 0",
          "        while i < j:",
          "            dst[off + i] = src[off + i] ^ ks[i]",
          "            i += 1",
          "        st[12] = uint(st[12]) + 1",
          "        off += 64"]
    srcs.append(k)

    # P: 32 words; 0-9 r (13-bit limbs), 10-19 h, 20-27 s (16-bit words),
    # bytes 112-127 a block buffer for a message's last partial block.
    k = ["@micropython.viper", "def _poly_init(P: ptr32, key: ptr8):"]
    clamp = {3: 15, 7: 15, 11: 15, 15: 15, 4: 252, 8: 252, 12: 252}
    for i in range(8):
        b = ["(uint(key[%d]) & %d)" % (j, clamp[j]) if j in clamp else "uint(key[%d])" % j for j in (2 * i, 2 * i + 1)]
        k.append("    t%d = %s | %s << 8" % (i, b[0], b[1]))
    k.append("    t8 = uint(0)")
    k += ["    P[%d] = %s" % (i, e) for i, e in enumerate(_limbs(["t%d" % i for i in range(9)]))]
    k += ["    P[%d] = 0" % (10 + i) for i in range(10)]
    k += ["    P[%d] = uint(key[%d]) | uint(key[%d]) << 8" % (20 + i, 16 + 2 * i, 17 + 2 * i) for i in range(8)]
    srcs.append(k)

    # Blocks of m[0:n]; a last partial block is zero-padded to 16 bytes with
    # the 2^128 bit set (raw == 0: the AEAD's pad16), or gets a 0x01 byte and
    # no 2^128 bit (raw != 0: plain Poly1305's last block).
    def R(i, j):
        return "r%d" % (i - j) if j <= i else "s%d" % (i + 10 - j)

    k = ["@micropython.viper", "def _poly_update(P: ptr32, m: ptr8, n: int, raw: int):",
         "    tb = ptr8(uint(P) + 112)"]
    k += ["    r%d = uint(P[%d])" % (i, i) for i in range(10)]
    k += ["    s%d = r%d * 5" % (i, i) for i in range(1, 10)]
    k += ["    h%d = uint(P[%d])" % (i, 10 + i) for i in range(10)]
    k += ["    off = 0",
          "    while off < n:",
          "        p = m",
          "        b = off",
          "        t8 = uint(1)",
          "        if n - off < 16:",
          "            j = n - off",
          "            i = 0",
          "            while i < 16:",
          "                tb[i] = 0",
          "                i += 1",
          "            i = 0",
          "            while i < j:",
          "                tb[i] = m[off + i]",
          "                i += 1",
          "            if raw:",
          "                tb[j] = 1",
          "                t8 = uint(0)",
          "            p = tb",
          "            b = 0"]
    k += ["        t%d = uint(p[b + %d]) | uint(p[b + %d]) << 8" % (i, 2 * i, 2 * i + 1) for i in range(8)]
    k += ["        h%d += %s" % (i, e) for i, e in enumerate(_limbs(["t%d" % i for i in range(9)]))]
    # h *= r mod 2^130 - 5 (poly1305-donna-16's schedule: a carry after five
    # products keeps every sum below 2^32; h < 2^14 + 2^9, 5 r < 2^16).
    for i in range(10):
        k.append("        d = %s%s" % ("" if i == 0 else "c + ", " + ".join("h%d * %s" % (j, R(i, j)) for j in range(5))))
        k.append("        c = d >> 13")
        k.append("        d = (d & 0x1fff) + %s" % " + ".join("h%d * %s" % (j, R(i, j)) for j in range(5, 10)))
        k.append("        c += d >> 13")
        k.append("        g%d = d & 0x1fff" % i)
    k += ["        c = (c << 2) + c + g0",
          "        h0 = c & 0x1fff",
          "        h1 = g1 + (c >> 13)"]
    k += ["        h%d = g%d" % (i, i) for i in range(2, 10)]
    k.append("        off += 16")
    k += ["    P[%d] = h%d" % (10 + i, i) for i in range(10)]
    srcs.append(k)

    # tag = (h mod 2^130 - 5) + s mod 2^128, constant time, into out[at:at+16].
    k = ["@micropython.viper", "def _poly_finish(P: ptr32, out: ptr8, at: int):"]
    k += ["    h%d = uint(P[%d])" % (i, 10 + i) for i in range(10)]
    k += ["    c = uint(0)", "    for _ in range(3):", "        h0 += c * 5"]  # three full carry passes: h < 2^130
    for i in range(10):
        if i:
            k.append("        h%d += c" % i)
        k += ["        c = h%d >> 13" % i, "        h%d &= 0x1fff" % i]
    k.append("    c = uint(5)")  # g = h + 5; its bit 130 set iff h >= p
    for i in range(10):
        k += ["    g%d = h%d + c" % (i, i), "    c = g%d >> 13" % i, "    g%d &= 0x1fff" % i]
    k += ["    mask = (c ^ 1) - 1", "    keep = mask ^ 0x1fff"]
    k += ["    h%d = (h%d & keep) | (g%d & mask)" % (i, i, i) for i in range(10)]
    k.append("    f = uint(0)")
    for w in range(8):
        parts = []
        for i in range(10):
            lo = 13 * i
            if lo < 16 * w + 16 and lo + 13 > 16 * w:
                parts.append("h%d << %d" % (i, lo - 16 * w) if lo >= 16 * w else "h%d >> %d" % (i, 16 * w - lo))
        k.append("    f = (f >> 16) + ((%s) & 0xffff) + uint(P[%d])" % (" | ".join(parts), 20 + w))
        k += ["    out[at + %d] = f" % (2 * w), "    out[at + %d] = f >> 8" % (2 * w + 1)]
    srcs.append(k)

    srcs.append(["@micropython.viper",
                 "def _ct_diff(a: ptr8, b: ptr8, off: int) -> int:",
                 "    d = 0",
                 "    for i in range(16):",
                 "        d |= a[i] ^ b[off + i]",
                 "    return d"])
    srcs.append(["@micropython.viper",
                 "def _zero(b: ptr8, n: int):",
                 "    for i in range(n):",
                 "        b[i] = 0"])
    return ["\n".join(s) + "\n" for s in srcs]


def viper_module(w64=False):
    # The viper back end as one module's source: `pumpctl deploy` compiles it
    # ahead of time for the board's arch (lib/aead_viper.mpy), so a Pico
    # neither spends 0.5 s nor needs the compiler's ~100 KB of transient heap
    # at boot (with the pump's buffers placed, that compile fails there).
    return "import micropython\n\n\n" + "\n\n".join(_viper_sources(w64))


# --- pure-Python back end ---------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_P1305 = (1 << 130) - 5


def _py_state():
    return [0] * 32


def _py_chacha_init(st, key, nonce, ctr):
    st[0:4] = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    st[4:12] = list(struct.unpack("<8I", bytes(key[:32])))
    st[12] = ctr & _MASK32
    st[13:16] = list(struct.unpack("<3I", bytes(nonce[:12])))


def _py_qr(x, a, b, c, d):
    x[a] = (x[a] + x[b]) & _MASK32
    t = x[d] ^ x[a]
    x[d] = (t << 16 | t >> 16) & _MASK32
    x[c] = (x[c] + x[d]) & _MASK32
    t = x[b] ^ x[c]
    x[b] = (t << 12 | t >> 20) & _MASK32
    x[a] = (x[a] + x[b]) & _MASK32
    t = x[d] ^ x[a]
    x[d] = (t << 8 | t >> 24) & _MASK32
    x[c] = (x[c] + x[d]) & _MASK32
    t = x[b] ^ x[c]
    x[b] = (t << 7 | t >> 25) & _MASK32


def _py_chacha_xor(st, src, dst, n):
    off = 0
    while off < n:
        x = st[0:16]
        for _ in range(10):
            for q in _COLS + _DIAG:
                _py_qr(x, *q)
        ks = struct.pack("<16I", *[(x[i] + st[i]) & _MASK32 for i in range(16)])
        for i in range(min(64, n - off)):
            dst[off + i] = src[off + i] ^ ks[i]
        st[12] = (st[12] + 1) & _MASK32
        off += 64


def _py_poly_init(P, key):
    P[0] = int.from_bytes(bytes(key[0:16]), "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    P[1] = int.from_bytes(bytes(key[16:32]), "little")
    P[2] = 0


def _py_poly_update(P, m, n, raw):
    r, h = P[0], P[2]
    for off in range(0, n, 16):
        block = bytes(m[off:min(off + 16, n)])
        if len(block) == 16 or not raw:
            v = int.from_bytes(block, "little") + (1 << 128)
        else:
            v = int.from_bytes(block + b"\x01", "little")
        h = (h + v) * r % _P1305
    P[2] = h


def _py_poly_finish(P, out, at):
    tag = ((P[2] % _P1305) + P[1]) & ((1 << 128) - 1)
    out[at:at + 16] = tag.to_bytes(16, "little")


def _py_ct_diff(a, b, off):
    d = 0
    for i in range(16):
        d |= a[i] ^ b[off + i]
    return d


def _py_zero(b, n):
    for i in range(n):
        b[i] = 0


# --- back-end selection -------------------------------------------------------------

IMPL = None
_VIPER = None  # the viper functions, once they passed the self-test
_VIPER_BUILT = None  # the viper functions as compiled (tests)
VIPER_ERROR = None  # why the viper back end is not in use
_PY = (_py_state, _py_chacha_init, _py_chacha_xor, _py_poly_init, _py_poly_update, _py_poly_finish,
       _py_ct_diff, _py_zero)
_NAMES = ("_chacha_init", "_chacha_xor", "_poly_init", "_poly_update", "_poly_finish", "_ct_diff", "_zero")


def _viper_state():
    return bytearray(128)


def use(impl, untrusted=False):
    """Selects the back end ("viper" or "python"); returns the one now in use.
    untrusted=True (tests only): the viper code even if it failed the self-test."""
    global IMPL, _ST, _P, _chacha_init, _chacha_xor, _poly_init, _poly_update, _poly_finish, _ct_diff, _zero
    fns = (_VIPER or (_VIPER_BUILT if untrusted else None)) if impl == "viper" else _PY if impl == "python" else None
    if fns is None:
        raise ValueError("back end not available: %s" % impl)
    (state, _chacha_init, _chacha_xor, _poly_init, _poly_update, _poly_finish, _ct_diff, _zero) = fns
    _ST, _P = state(), state()
    IMPL = impl
    return impl


_OTK = bytearray(32)
_TAG = bytearray(16)
_LEN = bytearray(16)
_Z64 = bytes(64)


def _check_lengths(key, nonce):
    if len(key) != KEY_LEN or len(nonce) != NONCE_LEN:
        raise ValueError("key must be 32 bytes, nonce 12")


def _begin(key, nonce):
    _check_lengths(key, nonce)
    _chacha_init(_ST, key, nonce, 0)
    _chacha_xor(_ST, _Z64, _OTK, 32)  # block 0 -> the one-time Poly1305 key; counter now 1
    _poly_init(_P, _OTK)


def _mac(aad, ct, n):
    _poly_update(_P, aad, len(aad), 0)
    _poly_update(_P, ct, n, 0)
    struct.pack_into("<IIII", _LEN, 0, len(aad), 0, n, 0)  # two 64-bit LE lengths
    _poly_update(_P, _LEN, 16, 0)


def _wipe():
    # No key, keystream or Poly1305 key left in the work buffers.
    _zero(_ST, len(_ST))
    _zero(_P, len(_P))
    _zero(_OTK, 32)


def seal_into(out, key, nonce, aad, plaintext):
    """ciphertext || tag into out[0:len(plaintext) + 16]; returns that length."""
    n = len(plaintext)
    if len(out) < n + TAG_LEN:
        raise ValueError("output buffer too small")
    try:
        _begin(key, nonce)
        _chacha_xor(_ST, plaintext, out, n)
        _mac(aad, out, n)
        _poly_finish(_P, out, n)
    finally:
        _wipe()
    return n + TAG_LEN


def open_into(out, key, nonce, aad, data):
    """Checks the tag (constant-time comparison), then decrypts into
    out[0:len(data) - 16] and returns that length; raises InvalidTag, with
    nothing written to out, if the tag is wrong."""
    n = len(data) - TAG_LEN
    _check_lengths(key, nonce)
    if n < 0:
        raise InvalidTag("too short")
    if len(out) < n:
        raise ValueError("output buffer too small")
    try:
        _begin(key, nonce)
        _mac(aad, data, n)
        _poly_finish(_P, _TAG, 0)
        if _ct_diff(_TAG, data, n):
            raise InvalidTag("authentication failed")
        _chacha_xor(_ST, data, out, n)
    finally:
        _wipe()
        _zero(_TAG, 16)
    return n


def seal(key, nonce, aad, plaintext):
    """ChaCha20-Poly1305 (RFC 8439 2.8): a new bytearray, ciphertext || 16-byte tag."""
    out = bytearray(len(plaintext) + TAG_LEN)
    seal_into(out, key, nonce, aad, plaintext)
    return out


def open(key, nonce, aad, data):  # noqa: A001 (the AEAD's own verb)
    """The plaintext (a new bytearray), or InvalidTag."""
    out = bytearray(max(0, len(data) - TAG_LEN))
    open_into(out, key, nonce, aad, data)
    return out


# The raw primitives, for the RFC's test vectors.
def chacha20_block(key, counter, nonce):
    out = bytearray(64)
    return chacha20_xor(key, counter, nonce, _Z64, out)


def chacha20_xor(key, counter, nonce, data, out=None):
    _check_lengths(key, nonce)
    if out is None:
        out = bytearray(len(data))
    try:
        _chacha_init(_ST, key, nonce, counter)
        _chacha_xor(_ST, data, out, len(data))
    finally:
        _wipe()
    return out


def poly1305(key, msg):
    if len(key) != 32:
        raise ValueError("key must be 32 bytes")
    out = bytearray(16)
    try:
        _poly_init(_P, key)
        _poly_update(_P, msg, len(msg), 1)
        _poly_finish(_P, out, 0)
    finally:
        _wipe()
    return out


# Known answer (cryptography's ChaCha20Poly1305): key 0..31, nonce 0..11,
# aad b"kat", 80 zero bytes -> this tag; and Poly1305 of 17 bytes.
_KAT_CT4 = b"\x89\xfb\x08\x00"
_KAT_TAG = b"\xa9:_V&\xda\xfe/\xe7\xd2\xec)|\xc4Q\xbb"
_KAT_POLY = b"g\x92 \"L,\xacWUX!\xa5|\x81L<"


def _self_test():
    ct = seal(bytes(range(32)), bytes(range(12)), b"kat", bytes(80))
    ok = ct[80:] == _KAT_TAG and ct[:4] == _KAT_CT4
    ok = ok and open(bytes(range(32)), bytes(range(12)), b"kat", ct) == bytes(80)
    return ok and poly1305(bytes(range(32, 64)), bytes(range(17))) == _KAT_POLY


def _viper_functions():
    # Compiled ahead of time when the board has it (aead_viper.mpy, native
    # code for its arch), else compiled here by the runtime's native emitter.
    try:
        import aead_viper

        return tuple(getattr(aead_viper, n) for n in _NAMES)
    except ImportError:  # not deployed (the unix ports), or another arch's: compile here
        pass
    g = {"micropython": micropython}
    for src in _viper_sources(sys.maxsize > _MASK32):
        gc.collect()  # each compile needs kilobyte blocks
        exec(src, g)
    return tuple(g[n] for n in _NAMES)


def _select():
    global _VIPER, _VIPER_BUILT, VIPER_ERROR
    use("python")
    if micropython is None:
        VIPER_ERROR = "not MicroPython"
        return
    try:
        _VIPER = _VIPER_BUILT = (_viper_state,) + _viper_functions()
        use("viper")
        if _self_test():
            return
        VIPER_ERROR = "known-answer self-test failed"
    except Exception as e:  # no native emitter (or it rejects the code): pure Python
        VIPER_ERROR = repr(e)
    _VIPER = None
    use("python")


_select()
