"""docs/protocol.md is enough to read the pump's log (issue #15 finding 8):
a full LOG_READ download decoded with the record layout and the event table
parsed from the document alone, and the table agrees with the firmware."""
import re
import struct

from pumpctl import paths
from pumpctl.fw import events, link_commands as lc

DOC = (paths.ROOT / "docs" / "protocol.md").read_text()


def section(title):
    i = DOC.index(title)
    j = DOC.find("\n## ", i + 1)
    return DOC[i:j if j > 0 else len(DOC)]


def doc_layout():
    text = section("## 15. Event log records")
    return re.search(r"the\s+struct\s+`([^`]+)`", text).group(1)


def doc_types():
    rows = re.findall(r"^\| (\d+) \| ([a-z -]+?) \|", section("## 15. Event log records"), re.M)
    return {int(n): name for n, name in rows}


def decode(recs, layout):
    size, out, i = struct.calcsize(layout), [], 0
    while i < len(recs):
        fields = struct.unpack_from(layout, recs, i)
        n = fields[-1]
        out.append(fields[:-1] + (bytes(recs[i + size:i + size + n]),))
        i += size + n
    assert i == len(recs), "records do not end where the layout says"
    return out


def test_the_documents_event_table_is_the_firmwares():
    assert doc_types() == events.NAMES


def test_a_full_log_download_decodes_with_the_document_alone(pump, capsys):
    for argv in (["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "4mg/day", "--yes"],
                 ["bolus", "--dose", "0.5mg", "--over", "30min", "--yes"], ["alarm-date", "2140-01-01", "--yes"]):
        assert pump.pumpctl(capsys, *argv)[0] == 0
    pump.bench("advance", ms=3_600_000)
    layout, types = doc_layout(), doc_types()
    c = pump.client("clinician")
    try:
        got, nxt = [], 1
        while True:
            p = c.request(lc.LOG_READ, {"first": nxt, "max": lc.LOG_MAX_PER_READ})
            got += decode(p["recs"], layout)
            if p["next"] > p["last_seq"] or p["next"] <= nxt:
                break
            nxt = p["next"]
    finally:
        c.close()
    assert got == pump.log()[:len(got)]  # what pumpctl's own decoder reads (its login comes after)
    seqs = [r[0] for r in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    names = [types[r[3]] for r in got]
    for want in ("boot", "keys provisioned", "therapy programmed", "bolus started", "programmer command"):
        assert want in names, want
