"""The emulator's bench port against its specification, docs/bench-port.md:
the documented commands, arguments, status fields and stroke record are the
emulator's own (the document cannot drift), every documented error is
refused with a clear reply that changes nothing, and the stroke record holds a
day at the mechanism's maximum rate, read back page by page."""
import json
import re
import socket
import subprocess

import pytest

from linkkit import DAY_MS, Pump
from pumpctl import paths
from pumpctl.bench import BenchClient, BenchError
from pumpctl.emulator import Emulator
from pumpctl.fw import link_commands as lc

ROOT = paths.ROOT
DOC = (ROOT / "docs" / "bench-port.md").read_text()
HOUR_MS = 3_600_000
# Morphine 0.5 mg/mL at 12 mg/day: 24 mL/day, the mechanism's maximum rate
# (firmware/limits.py), one 500 nL stroke every 1.8 s.
MAX_RATE_RX = {"drug": "morphine", "conc_ng_ml": 500_000, "steps": [{"start_s": 0, "dose_ng_day": 12_000_000}]}
FULL_NL = 20_000_000  # the emulated reservoir


# -- the document -----------------------------------------------------------------------------
def doc_table(heading, n=0):
    """Rows (lists of cells, backticks removed) of the n-th table under `## heading`."""
    section = DOC.split("\n## " + heading + "\n", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"(?:^\|.*\n)+", section, re.M)[n]
    rows = table.splitlines()[2:]  # after the header and its rule
    return [[c.strip().replace("`", "") for c in ln.strip("|").split("|")] for ln in rows]


def doc_number(text):
    return int(re.sub(r"\(.*\)", "", text).replace(",", "").strip())


def doc_range(typ, text):
    if typ == "boolean":
        assert text == "true/false", text
        return [False, True]
    text = re.sub(r"\(.*\)", "", text).replace(",", "").strip()
    if text.startswith("≥"):
        return [int(text[1:]), None]
    lo, hi = text.split("–")
    return [int(lo), int(hi)]


def doc_default(text):
    if text in ("required", "unchanged"):
        return text
    if text in ("true", "false"):
        return text == "true"
    return doc_number(text)


DOC_COMMANDS = {row[0]: [] if row[1] == "—" else [a.strip() for a in row[1].split(",")]
                for row in doc_table("Commands")}
DOC_ARGS = {(cmd, arg): {"type": {"integer": "int", "boolean": "bool"}[typ], "range": doc_range(typ, rng),
                         "default": doc_default(default)}
            for cmd, arg, typ, _unit, rng, default in doc_table("Arguments")}
INT_ARGS = sorted(k for k, v in DOC_ARGS.items() if v["type"] == "int")
BOOL_ARGS = sorted(k for k, v in DOC_ARGS.items() if v["type"] == "bool")
REQUIRED_ARGS = sorted(k for k, v in DOC_ARGS.items() if v["default"] == "required")
PAGE_MAX = DOC_ARGS[("strokes", "limit")]["range"][1]


def arg_id(key):
    return "%s.%s" % key


# -- the emulator's own tables ----------------------------------------------------------------
DUMP_TABLE = """
import sys
sys.path[:0] = [%r, %r]
import json
import emulator
out = {}
for name, (handler, spec) in emulator.BENCH_COMMANDS.items():
    out[name] = {a: {"type": "bool" if s[0] is bool else "int", "range": [s[1], s[2]], "default": s[3]}
                 for a, s in spec.items()}
print(json.dumps(out))
"""


def emulator_table():
    """BENCH_COMMANDS of boards/unix/emulator.py, as the unix port imports it."""
    script = DUMP_TABLE % (str(ROOT / "boards" / "unix"), str(ROOT / "firmware"))
    out = subprocess.run([paths.micropython(), "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def source_const(path, name):
    """The value of `NAME = const(N)` or `NAME = N` in a firmware or board source."""
    m = re.search(r"^\s*%s = (?:const\()?(\d+)" % name, (ROOT / path).read_text(), re.M)
    assert m, (path, name)
    return int(m.group(1))


def test_the_documented_commands_are_exactly_the_emulators():
    table = emulator_table()
    assert sorted(DOC_COMMANDS) == sorted(table)
    for cmd, args in DOC_COMMANDS.items():
        assert sorted(args) == sorted(table[cmd]), cmd


def test_the_documented_arguments_have_the_emulators_types_ranges_and_defaults():
    table = emulator_table()
    assert DOC_ARGS == {(cmd, arg): spec for cmd, args in table.items() for arg, spec in args.items()}


def test_strokes_by_kind_is_documented_in_the_firmwares_kind_order():
    kinds = dict(re.findall(r"^(KIND_\w+) = const\((\d+)\)", (ROOT / "firmware" / "scheduler.py").read_text(), re.M))
    doc = [(int(i), kind.split()[0]) for i, kind in doc_table("Status fields", 1)]
    assert doc == sorted((int(v), k) for k, v in kinds.items())


def test_the_documented_record_is_the_models_and_holds_a_day_at_the_maximum_rate():
    record_len = source_const("boards/unix/motor_model.py", "DAY_RECORD_LEN")
    day_at_max = source_const("firmware/limits.py", "RATE_MAX_NL_DAY") // source_const("firmware/hal.py", "STROKE_NL")
    assert "newest **%s**" % format(record_len, ",") in DOC
    assert record_len >= day_at_max


# -- a live emulator --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = Emulator(tmp_path_factory.mktemp("bench") / "pump", virtual=True).start()
    with e.bench() as b:
        b.call("advance", ms=HOUR_MS)  # some strokes in the record, some state to keep
    yield e
    e.stop()


@pytest.fixture
def bench(emu):
    with emu.bench() as b:
        yield b


def refused(bench, cmd, **args):
    """The error text of a request that must be refused, checking it changed nothing."""
    before = bench.call("status")
    with pytest.raises(BenchError) as e:
        bench.call(cmd, **args)
    assert bench.call("status") == before
    return str(e.value)


def raw(emu, *lines):
    """Replies to raw request lines, one per line sent."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(emu.bench_path))
        s.sendall(b"".join(lines))
        rx = s.makefile("rb")
        return [json.loads(rx.readline()) for _ in range(len([ln for ln in lines if ln.endswith(b"\n")]))]


def test_a_status_reply_has_exactly_the_documented_fields(bench):
    assert set(bench.call("status")) == {row[0] for row in doc_table("Status fields")}


def test_an_unknown_command_is_refused_naming_the_commands_and_changes_nothing(bench):
    text = refused(bench, "stall")
    assert text.startswith('bench: unknown command "stall"')
    assert all(cmd in text for cmd in DOC_COMMANDS)


def test_a_request_without_a_command_is_refused(emu):
    reply, = raw(emu, b'{"ms": 5}\n')
    assert reply["ok"] is False and reply["error"].startswith('bench: no "cmd" in the request')


@pytest.mark.parametrize("line", [b"status\n", b"[1, 2]\n", b'{"cmd": "status"\n'])
def test_a_line_that_is_not_a_json_object_is_refused(emu, line):
    reply, = raw(emu, line)
    assert reply["ok"] is False and reply["error"].startswith("bench: not a JSON object")


def test_an_over_long_request_gets_one_refusal_and_the_next_is_answered(emu):
    long = b'{"cmd": "status", "pad": "' + b"x" * 10_000 + b'"}\n'
    refusal, after = raw(emu, long, b'{"cmd": "status"}\n')
    assert refusal == {"ok": False, "error": "bench: request longer than 4096 bytes"}
    assert after["ok"] is True and "board_ms" in after


def test_an_unknown_argument_is_refused_and_changes_nothing(bench):
    text = refused(bench, "advance", msec=1000)
    assert text == 'bench: advance: unknown argument "msec" (arguments: ms)'


@pytest.mark.parametrize("key", REQUIRED_ARGS, ids=arg_id)
def test_a_missing_required_argument_is_refused_and_changes_nothing(bench, key):
    cmd, arg = key
    assert refused(bench, cmd).startswith("bench: %s: '%s' is required" % (cmd, arg))


@pytest.mark.parametrize("key", INT_ARGS, ids=arg_id)
@pytest.mark.parametrize("value", ["1", 1.0, True, None], ids=["string", "float", "boolean", "null"])
def test_an_integer_argument_of_another_type_is_refused_and_changes_nothing(bench, key, value):
    cmd, arg = key
    text = refused(bench, cmd, **{arg: value})
    assert text.startswith("bench: %s: '%s' must be an integer" % (cmd, arg)), text
    assert text.endswith("got %s" % json.dumps(value))


@pytest.mark.parametrize("key", BOOL_ARGS, ids=arg_id)
@pytest.mark.parametrize("value", [1, 0, "true", None], ids=["one", "zero", "string", "null"])
def test_a_boolean_argument_of_another_type_is_refused_and_changes_nothing(bench, key, value):
    cmd, arg = key
    text = refused(bench, cmd, **{arg: value})
    assert text == "bench: %s: '%s' must be true or false, got %s" % (cmd, arg, json.dumps(value))


OUT_OF_RANGE = [(k, lo - 1) for k in INT_ARGS for lo in [DOC_ARGS[k]["range"][0]]] + \
               [(k, hi + 1) for k in INT_ARGS for hi in [DOC_ARGS[k]["range"][1]] if hi is not None]


@pytest.mark.parametrize("key,value", OUT_OF_RANGE, ids=lambda v: arg_id(v) if isinstance(v, tuple) else str(v))
def test_an_argument_out_of_its_documented_range_is_refused_and_changes_nothing(bench, key, value):
    cmd, arg = key
    lo, hi = DOC_ARGS[key]["range"]
    wanted = "an integer from %d to %d" % (lo, hi) if hi is not None else "an integer >= %d" % lo
    assert refused(bench, cmd, **{arg: value}) == "bench: %s: '%s' must be %s, got %d" % (cmd, arg, wanted, value)


# -- errors of the emulator's set-up: one without --virtual, --image or a watchdog -------------
@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    sock = tmp_path_factory.mktemp("bare") / "bench.sock"
    proc = subprocess.Popen([paths.micropython(), str(paths.EMULATOR_MAIN), "--bench", str(sock)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "ready" in proc.stdout.readline()
        with BenchClient(str(sock), timeout=30) as b:
            yield b
            b.call("shutdown")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("cmd,needs", [("advance", "virtual time"), ("flash_fault", "a flash image"),
                                       ("soft_reset", "a flash image"), ("hang", "the watchdog")])
def test_a_command_the_emulator_is_not_set_up_for_is_refused(bare, cmd, needs):
    args = {"ms": 1000} if cmd == "advance" else {}
    with pytest.raises(BenchError) as e:
        bare.call(cmd, **args)
    assert str(e.value).startswith("bench: %s: needs %s" % (cmd, needs))
    assert bare.call("status")["flash_failing"] is False  # still answering, nothing changed


# -- the stroke record: a day at the maximum rate ----------------------------------------------
def max_rate_pump(tmp_path, hours):
    """A pump at 24 mL/day run `hours` of virtual time, refilled every 12 h
    (the 20 mL reservoir lasts 20 h at that rate)."""
    p = Pump(tmp_path, prescription=MAX_RATE_RX)
    for _ in range(int(hours // 12)):
        st = p.bench("advance", ms=12 * HOUR_MS)
        p.call(lc.REFILL, {"withdrawn_nl": st["remaining_nl"], "added_nl": FULL_NL})
    p.bench("advance", ms=int(hours % 12 * HOUR_MS) + 1000)
    return p


def read_all(p):
    """Pages of the record from stroke 0, as a reader following the document
    does: (index of the first time, times, count)."""
    first, times, start = 0, [], None
    while True:
        page = p.bench("strokes", first=first, limit=PAGE_MAX)
        start = page["first"] if start is None else start
        assert page["first"] == first or not times  # only the first page may skip dropped strokes
        times += page["times"]
        first = page["first"] + len(page["times"])
        if first == page["count"]:
            return start, times, page["count"]


@pytest.fixture
def day_pump(tmp_path):
    p = max_rate_pump(tmp_path, 24)
    yield p
    p.stop()


def test_a_day_at_the_maximum_rate_reads_back_whole_by_paging(day_pump):
    start, times, count = read_all(day_pump)
    assert count == 48_000  # 24 mL/day of 500 nL strokes
    assert start == 0 and len(times) == count  # nothing dropped
    assert all(0 < b - a <= 2000 for a, b in zip(times, times[1:]))  # a stroke every 1.8 s on a 1-s grid
    assert times[-1] <= DAY_MS + 1000


@pytest.fixture
def wrapped_pump(tmp_path):
    p = max_rate_pump(tmp_path, 33)  # 66,000 strokes: the record wrapped
    yield p
    p.stop()


def test_paging_after_the_record_wrapped_starts_at_the_oldest_kept_stroke(wrapped_pump):
    record_len = source_const("boards/unix/motor_model.py", "DAY_RECORD_LEN")
    start, times, count = read_all(wrapped_pump)
    assert count > record_len
    assert start == count - record_len and len(times) == record_len
    assert all(0 < b - a <= 2000 for a, b in zip(times, times[1:]))  # through the ring's wrap too


@pytest.fixture
def pump_past_2_32_ms(tmp_path):
    # The demonstration therapy (a stroke every 43.2 s) for an hour, suspended
    # for most of 2^32 ms (49.7 days: a pause the record spans exactly), then
    # two hours more: board time passes 2^32 ms, where the low 32 bits a
    # stroke keeps wrap.
    p = Pump(tmp_path)
    p.bench("advance", ms=HOUR_MS)
    p.call(lc.SUSPEND)
    p.bench("advance", ms=(1 << 32) - 2 * HOUR_MS)
    p.call(lc.RESUME)
    p.bench("advance", ms=2 * HOUR_MS)
    yield p
    p.stop()


def test_stroke_times_stay_exact_after_board_time_passes_2_32_ms(pump_past_2_32_ms):
    start, times, count = read_all(pump_past_2_32_ms)
    board_ms = pump_past_2_32_ms.bench("status")["board_ms"]
    assert start == 0 and times[0] < HOUR_MS and 1 << 32 < times[-1] <= board_ms
    gaps = [b - a for a, b in zip(times, times[1:])]
    pause = max(gaps)
    assert (1 << 32) - 2 * HOUR_MS < pause < 1 << 32  # the suspension, to the ms grid
    gaps.remove(pause)
    assert all(43_000 <= g <= 44_000 for g in gaps)  # 43.2 s on a 1-s grid


@pytest.fixture
def pump_after_a_long_pause(tmp_path):
    # At the maximum rate for an hour (2,000 strokes), suspended for 50 days
    # (more than 2^32 ms), then 10 minutes more.
    p = Pump(tmp_path, prescription=MAX_RATE_RX)
    before = p.bench("advance", ms=HOUR_MS)["strokes"]
    p.call(lc.SUSPEND)
    p.bench("advance", ms=50 * DAY_MS)
    p.call(lc.RESUME)
    p.bench("advance", ms=HOUR_MS // 6)
    yield p, before
    p.stop()


def test_a_pause_of_2_32_ms_or_more_leaves_exact_the_strokes_after_it_and_before_the_last_1024_mark(
        pump_after_a_long_pause):
    p, before = pump_after_a_long_pause
    start, times, count = read_all(p)
    early, late = times[:1024], times[before:]  # the documented bound: strokes 1024..before may be misdated
    assert start == 0 and early[0] < 3000 and all(1000 <= b - a <= 2000 for a, b in zip(early, early[1:]))
    assert late[0] > 50 * DAY_MS and all(1000 <= b - a <= 2000 for a, b in zip(late, late[1:]))
    assert late[-1] <= p.bench("status")["board_ms"]


def test_asking_past_the_end_returns_no_times_and_the_count(bench):
    count = bench.call("status")["strokes"]
    assert bench.call("strokes", first=count + 10) == {"count": count, "first": count, "times": []}
