"""The programmer's key store: each pump's link keys, by serial number.

A JSON file readable by its owner only (mode 0600, in a 0700 folder):
    {"version": 1, "pumps": {"EMU-1A2B3C4D": {"patient": "<64 hex>",
                                               "clinician": "<64 hex>",
                                               "model": "...", "provisioned": "<ISO time>"}}}
Where: --keystore PATH, else $PUMPCTL_KEYSTORE, else
$XDG_CONFIG_HOME/pumpctl/keys.json (default ~/.config/pumpctl/keys.json).
Keys come from the pump at provisioning (random, per pump); nothing here is
derived from a serial number.
"""
import contextlib
import datetime
import json
import os
import tempfile
from pathlib import Path

from pumpctl import paths
from pumpctl.fw import wire

ROLES = {"patient": wire.ROLE_PATIENT, "clinician": wire.ROLE_CLINICIAN}
VERSION = 1


class KeyStoreError(RuntimeError):
    pass


def default_path(explicit=None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("PUMPCTL_KEYSTORE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "pumpctl" / "keys.json"


# A damaged key store: what to do (a pump gives its keys once, docs/pumpctl.md section 2).
_DAMAGED = ("restore the file from your backup (a pump gives its keys once: they are nowhere else), or give "
            "another key store with --keystore")


class KeyStore:
    def __init__(self, path=None):
        self.path = default_path(path)

    def _load(self) -> dict:
        if not os.path.lexists(self.path):
            return {"version": VERSION, "pumps": {}}
        try:
            data = json.loads(paths.read_text(self.path, "key store", limit=1 << 20))
        except paths.InputFileError as e:
            raise KeyStoreError("%s (give the key store file with --keystore or $PUMPCTL_KEYSTORE)" % e)
        except ValueError as e:
            raise KeyStoreError("key store %s unreadable (%s): %s" % (self.path, e, _DAMAGED))
        if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("pumps"), dict):
            raise KeyStoreError("key store %s: not a version %d key store: %s" % (self.path, VERSION, _DAMAGED))
        return data

    def get(self, serial: str, role: str) -> bytes:
        """The key for `role` of pump `serial`; KeyStoreError if there is none."""
        entry = self._load()["pumps"].get(serial)
        if entry is None:
            raise KeyStoreError("no keys for pump %s in %s (provision it, or use the key store it was "
                                "provisioned with: --keystore)" % (serial, self.path))
        try:
            key = bytes.fromhex(entry[role])
        except (KeyError, TypeError, ValueError):
            raise KeyStoreError("key store %s has no valid %s key for pump %s: %s" % (self.path, role, serial, _DAMAGED))
        if len(key) != wire.KEY_LEN:
            raise KeyStoreError("key store %s: %s key for pump %s is not %d bytes"
                                % (self.path, role, serial, wire.KEY_LEN))
        return key

    def has(self, serial: str) -> bool:
        return serial in self._load()["pumps"]

    def put(self, serial: str, patient: bytes, clinician: bytes, model: str = ""):
        data = self._load()
        data["pumps"][serial] = {
            "patient": patient.hex(), "clinician": clinician.hex(), "model": model,
            "provisioned": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        self._write(data)

    # Key rotation (pumpctl rotate-keys): the next keys are stored before the
    # pump is asked, so a reply lost with the connection cannot lose them;
    # the first login they open makes them the keys.
    def put_next(self, serial: str, patient: bytes, clinician: bytes):
        data = self._load()
        data["pumps"][serial]["next"] = {"patient": patient.hex(), "clinician": clinician.hex()}
        self._write(data)

    def next_key(self, serial: str, role: str) -> "bytes | None":
        entry = self._load()["pumps"].get(serial) or {}
        nxt = entry.get("next")
        try:
            return bytes.fromhex(nxt[role]) if isinstance(nxt, dict) else None
        except (KeyError, TypeError, ValueError):
            return None

    def promote(self, serial: str):
        data = self._load()
        entry = data["pumps"][serial]
        nxt = entry.pop("next", None)
        if nxt:
            entry.update(nxt, rotated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        self._write(data)

    def drop_next(self, serial: str):
        data = self._load()
        if data["pumps"].get(serial, {}).pop("next", None) is not None:
            self._write(data)

    def _write(self, data: dict):
        # Owner-only, replaced atomically: a crash never leaves half a file.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            _write_private(tmp, data)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # never leave keys behind in a half-written file
            raise

    def rescue(self, serial: str, patient: bytes, clinician: bytes, model: str = "") -> Path:
        """Keys that could not go into this store, saved as a key store of
        their own (mode 0600, a new file in the temporary folder): usable at
        once with --keystore, or copied into the usual store."""
        fd, name = tempfile.mkstemp(prefix="pumpctl-keys-%s-" % paths.file_part(serial), suffix=".json")
        os.close(fd)
        entry = {"patient": patient.hex(), "clinician": clinician.hex(), "model": model,
                 "provisioned": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        _write_private(Path(name), {"version": VERSION, "pumps": {serial: entry}})
        return Path(name)


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
