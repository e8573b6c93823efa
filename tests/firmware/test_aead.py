# ChaCha20-Poly1305 (RFC 8439) of the programmer link, on MicroPython
# (firmware/aead.py, docs/crypto.md): the RFC's test vectors on both back
# ends, refusal of forged frames, no allocation in seal_into/open_into, and
# byte-for-byte agreement with the host library (`cryptography`'s
# ChaCha20Poly1305, run by CPython from this test) on random cases.
import json
import os
import sys
from binascii import hexlify, unhexlify

import micropython

import aead
from test_wire import raises

ROOT = sys.path[0] + "/../.."


def h(s):
    return unhexlify(s.replace(" ", "").replace(":", "").replace("\n", ""))



def backends():
    # Every back end this runtime has: "viper" where the native emitter
    # compiled it (unix x64, unix i386, rp2), and always "python".
    # The viper code runs even if it failed its import-time self-test (then
    # the module itself uses "python"), so that a fault shows which vector.
    before = aead.IMPL
    impls = ["python"] if aead._VIPER_BUILT is None else ["viper", "python"]
    for impl in impls:
        aead.use(impl, True)
        yield impl
    aead.use(before)


LADIES = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
          b"sunscreen would be it.")
KEY_0_31 = bytes(range(32))

# RFC 8439 2.3.2 (block function) and A.1 #1-#5: (key, counter, nonce, 64-byte block)
BLOCKS = [
    (KEY_0_31, 1, h("000000090000004a00000000"),
     h("10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
       "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")),
    (bytes(32), 0, bytes(12),
     h("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
       "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")),
    (bytes(32), 1, bytes(12),
     h("9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
       "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f")),
    (bytes(31) + b"\x01", 1, bytes(12),
     h("3aeb5224ecf849929b9d828db1ced4dd832025e8018b8160b82284f3c949aa5a"
       "8eca00bbb4a73bdad192b5c42f73f2fd4e273644c8b36125a64addeb006c13a0")),
    (b"\x00\xff" + bytes(30), 2, bytes(12),
     h("72d54dfbf12ec44b362692df94137f328fea8da73990265ec1bbbea1ae9af0ca"
       "13b25aa26cb4a648cb9b9d1be65b2c0924a66c54d545ec1b7374f4872e99f096")),
    (bytes(32), 0, bytes(11) + b"\x02",
     h("c2c64d378cd536374ae204b9ef933fcd1a8b2288b3dfa49672ab765b54ee27c7"
       "8a970e0e955c14f3a88e741b97c286f75f8fc299e8148362fa198a39531bed6d")),
]

# RFC 8439 2.4.2 (ChaCha20 encryption, counter 1, 114 bytes: 1 full block and a tail)
ENC_242 = (KEY_0_31, 1, h("000000000000004a00000000"), LADIES,
           h("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
             "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
             "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
             "5af90bbf74a35be6b40b8eedf2785e42874d"))

# RFC 8439 2.5.2, and A.3 #1 and the corner cases #5-#11: (key, message, tag)
POLYS = [
    (h("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"), b"Cryptographic Forum Research Group",
     h("a8061dc1305136c6c22b8baf0c0127a9")),
    (bytes(32), bytes(64), bytes(16)),
    (b"\x02" + bytes(31), b"\xff" * 16, b"\x03" + bytes(15)),
    (b"\x02" + bytes(15) + b"\xff" * 16, b"\x02" + bytes(15), b"\x03" + bytes(15)),
    (b"\x01" + bytes(31), b"\xff" * 16 + b"\xf0" + b"\xff" * 15 + b"\x11" + bytes(15), b"\x05" + bytes(15)),
    (b"\x01" + bytes(31), b"\xff" * 16 + b"\xfb" + b"\xfe" * 15 + b"\x01" * 16, bytes(16)),
    (b"\x02" + bytes(31), b"\xfd" + b"\xff" * 15, b"\xfa" + b"\xff" * 15),
    (b"\x01" + bytes(7) + b"\x04" + bytes(23),
     h("e33594d7505e43b900000000000000003394d7505e4379cd01000000000000000000000000000000000000000000000001"
       "000000000000000000000000000000"),
     b"\x14" + bytes(7) + b"\x55" + bytes(7)),
    (b"\x01" + bytes(7) + b"\x04" + bytes(23),
     h("e33594d7505e43b900000000000000003394d7505e4379cd010000000000000000000000000000000000000000000000"),
     b"\x13" + bytes(15)),
    # Not the RFC's: r at its clamped maximum and a first block chosen (h * r =
    # p - 25) so that every 13-bit limb of h is near 2^14 when the 0xff blocks
    # are added: the worst case of the product sums (2^31.3 with aead.py's
    # carry after five products; without that carry they pass 2^32 and a
    # 32-bit core -- the RP2040, the i386 port -- gets it wrong). Tag from
    # cryptography's Poly1305.
    (b"\xff" * 16 + bytes(range(16)),
     h("e88c850343afa785216bc345c45398f8") + b"\xff" * 48,
     h("723fcb27cf42452311c447c8acc5d216")),
]

# RFC 8439 2.8.2 (AEAD): key, nonce, aad, plaintext, ciphertext, tag
AEAD_282 = (bytes(range(0x80, 0xA0)), h("070000004041424344454647"), h("50515253c0c1c2c3c4c5c6c7"), LADIES,
            h("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
              "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
              "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
              "3ff4def08e4b7a9de576d26586cec64b6116"),
            h("1ae10b594f09e26a7e902ecbd0600691"))


# --- RFC 8439 test vectors ------------------------------------------------------------


def test_rfc8439_block_function_2_3_2_and_a1():
    for impl in backends():
        for key, ctr, nonce, block in BLOCKS:
            assert aead.chacha20_block(key, ctr, nonce) == block, (impl, ctr, hexlify(nonce))


def test_rfc8439_chacha20_encryption_2_4_2():
    key, ctr, nonce, pt, ct = ENC_242
    for impl in backends():
        assert aead.chacha20_xor(key, ctr, nonce, pt) == ct, impl
        assert aead.chacha20_xor(key, ctr, nonce, ct) == pt, impl


def test_rfc8439_poly1305_2_5_2_and_a3():
    for impl in backends():
        for i, (key, msg, tag) in enumerate(POLYS):
            assert aead.poly1305(key, msg) == tag, (impl, i, hexlify(aead.poly1305(key, msg)))


def test_rfc8439_aead_2_8_2():
    key, nonce, aad, pt, ct, tag = AEAD_282
    for impl in backends():
        assert aead.seal(key, nonce, aad, pt) == ct + tag, impl
        assert aead.open(key, nonce, aad, ct + tag) == pt, impl


def test_the_viper_back_end_is_in_use_where_the_runtime_can_compile_it():
    # The unix ports (x64 and the 31-bit i386 build) both have a native
    # emitter: the fast back end must not have silently fallen back.
    assert aead.IMPL == "viper" and aead._VIPER is not None, (aead.IMPL, aead.VIPER_ERROR)
    assert aead._self_test()


# --- forgeries are refused ---------------------------------------------------------------


def test_a_wrong_tag_a_flipped_bit_or_other_aad_is_refused():
    key, nonce, aad, pt, ct, tag = AEAD_282
    good = ct + tag
    for impl in backends():
        assert aead.open(key, nonce, aad, good) == pt
        for i in list(range(0, len(good), 7)) + [len(good) - 17, len(good) - 16, len(good) - 1]:
            for bit in (0, 7):
                bad = bytearray(good)
                bad[i] ^= 1 << bit
                raises(aead.InvalidTag, aead.open, key, nonce, aad, bad)
        raises(aead.InvalidTag, aead.open, key, nonce, aad[:-1], good)
        raises(aead.InvalidTag, aead.open, key, nonce, aad + b"\x00", good)
        raises(aead.InvalidTag, aead.open, key, nonce, b"", good)
        raises(aead.InvalidTag, aead.open, bytes(32), nonce, aad, good)
        raises(aead.InvalidTag, aead.open, key, bytes(12), aad, good)
        raises(aead.InvalidTag, aead.open, key, nonce, aad, good[:-1])
        raises(aead.InvalidTag, aead.open, key, nonce, aad, good[:15])
        # A refused frame leaves the output buffer untouched.
        out = bytearray(b"\xaa" * len(pt))
        bad = bytearray(good)
        bad[-1] ^= 1
        raises(aead.InvalidTag, aead.open_into, out, key, nonce, aad, bad)
        assert out == b"\xaa" * len(pt)
        # An empty plaintext still authenticates its AAD.
        sealed = aead.seal(key, nonce, aad, b"")
        assert len(sealed) == 16 and aead.open(key, nonce, aad, sealed) == b""
        raises(aead.InvalidTag, aead.open, key, nonce, aad + b"!", sealed)


def test_bad_key_or_nonce_lengths_are_errors():
    for fn, args in ((aead.seal, (bytes(31), bytes(12), b"", b"x")),
                     (aead.seal, (bytes(32), bytes(8), b"", b"x")),
                     (aead.open, (bytes(32), bytes(13), b"", bytes(20))),
                     (aead.open, (bytes(33), bytes(12), b"", bytes(20))),
                     (aead.seal_into, (bytearray(16), bytes(32), bytes(12), b"", b"x")),
                     (aead.poly1305, (bytes(16), b"x"))):
        e = raises(ValueError, fn, *args)
        assert not isinstance(e, aead.InvalidTag), args  # a usage error, not a forgery


def test_seal_into_and_open_into_allocate_nothing():
    key, nonce, aad, pt, ct, tag = AEAD_282
    out = bytearray(len(pt) + 16)
    back = bytearray(len(pt))
    aead.seal_into(out, key, nonce, aad, pt)  # warm up
    micropython.heap_lock()
    try:
        n = aead.seal_into(out, key, nonce, aad, pt)
        m = aead.open_into(back, key, nonce, aad, out)
    finally:
        micropython.heap_unlock()
    assert n == len(pt) + 16 and out == ct + tag
    assert m == len(pt) and back == pt


def test_no_key_material_is_left_in_the_work_buffers():
    key, nonce, aad, pt, ct, tag = AEAD_282
    for impl in backends():
        aead.open(key, nonce, aad, aead.seal(key, nonce, aad, pt))
        for buf in (aead._ST, aead._P, aead._OTK, aead._TAG):
            assert not any(buf), impl


# --- against the host library ---------------------------------------------------------

GEN = r'''
import json, random, sys
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
seed, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
edge = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257, 299, 300]
cases = []
for i in range(count):
    n = edge[i % len(edge)] if i < 2 * len(edge) else rnd.randint(0, 300)
    a = rnd.choice([0, 1, 12, 15, 16, 17, 32, 33, 64, rnd.randint(0, 300)])
    key, nonce, aad, pt = (rnd.randbytes(k) for k in (32, 12, a, n))
    ct = ChaCha20Poly1305(key).encrypt(nonce, pt, aad)
    cases.append([x.hex() for x in (key, nonce, aad, pt, ct)])
with open(path, "w") as f:
    json.dump(cases, f)
'''


def host_python():
    exe = os.getenv("AEAD_HOST_PYTHON") or ROOT + "/.venv/bin/python"
    try:
        os.stat(exe)
    except OSError:
        exe = "python3"
    return exe


def host_cases(seed, count):
    # Cases made and sealed by `cryptography` in CPython (this test's own generator).
    tag = hexlify(os.urandom(6)).decode()
    gen, path = "/tmp/aead-gen-%s.py" % tag, "/tmp/aead-cases-%s.json" % tag
    with open(gen, "w") as f:
        f.write(GEN)
    try:
        rc = os.system("%s %s %d %d %s" % (host_python(), gen, seed, count, path))
        assert rc == 0, "the host generator failed (%d): needs CPython with cryptography" % rc
        with open(path) as f:
            cases = json.load(f)
    finally:
        for p in (gen, path):
            try:
                os.remove(p)
            except OSError:
                pass
    assert len(cases) == count
    return [[unhexlify(x) for x in c] for c in cases]


def check_against_host(seed, count):
    for i, (key, nonce, aad, pt, ct) in enumerate(host_cases(seed, count)):
        where = (aead.IMPL, seed, i, len(aad), len(pt))
        assert aead.seal(key, nonce, aad, pt) == ct, where
        assert aead.open(key, nonce, aad, ct) == pt, where
        bad = bytearray(ct)
        bad[i % len(bad)] ^= 0x80
        raises(aead.InvalidTag, aead.open, key, nonce, aad, bad)


def test_byte_for_byte_as_the_host_library_on_random_frames():
    # 400 cases, lengths 0..300 (every edge around 16 and 64 first), AAD 0..300.
    seed = int.from_bytes(os.urandom(4), "little")
    check_against_host(seed, 400)
    check_against_host(15, 100)


def test_the_pure_python_fallback_matches_the_host_library_too():
    aead.use("python")
    try:
        check_against_host(8439, 50)
    finally:
        aead.use("viper" if aead._VIPER else "python")
    assert aead.IMPL == ("viper" if aead._VIPER else "python")
