"""Commands in flight: a therapy-changing command pumpctl has sent and has no
answer to yet. It is noted beside the key store before it is sent and
removed once the pump answers, so when pumpctl dies in between (killed, the
computer's power gone) the next command to that pump says whether it was
carried out, from the pump's own audit record (docs/protocol.md §14). It is
never sent again by itself: the clinician who interrupted it decides.
"""
import json
import os
import time
from pathlib import Path

from pumpctl import paths
from pumpctl.fw import events
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire
from pumpctl.link import unpack_log

_SCAN = 256  # audit records looked through after the one noted


class Journal:
    def __init__(self, keystore_path):
        self.dir = Path(keystore_path).parent / "inflight"

    def _path(self, serial):
        return self.dir / ("%s.json" % paths.file_part(serial))

    def begin(self, serial, mtype, log_seq):
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path(serial), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"command": lc.COMMANDS[mtype][0], "type": mtype, "after_seq": log_seq,
                       "sent": time.strftime("%Y-%m-%d %H:%M:%S")}, f)

    def end(self, serial):
        try:
            os.unlink(self._path(serial))
        except FileNotFoundError:
            pass

    def pending(self, serial):
        try:
            entry = json.loads(self._path(serial).read_text())
            return entry if isinstance(entry, dict) and isinstance(entry.get("after_seq"), int) else None
        except (OSError, ValueError):
            return None


def outcome(client, entry):
    """What became of the command noted in `entry`, in words, from the audit
    records after it (a clinician session)."""
    first = entry["after_seq"] + 1
    p = client.request(lc.LOG_READ, {"first": first, "max": lc.LOG_MAX_PER_READ})
    recs, seen = unpack_log(p["recs"]), 0
    while seen < _SCAN:
        for r in recs:
            if r[3] == events.LINK_COMMAND and r[6] == entry["type"]:
                if r[7] == 0:
                    return "was carried out (check it with `pumpctl status`)"
                return "was refused by the pump (%s): nothing was changed" % wire.error_name(r[7])
        seen += len(recs)
        if p["next"] > p["last_seq"] or not recs:
            break
        p = client.request(lc.LOG_READ, {"first": p["next"], "max": lc.LOG_MAX_PER_READ})
        recs = unpack_log(p["recs"])
    return "never reached the pump: nothing was changed (give it again if it is still wanted)"
