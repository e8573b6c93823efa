"""pumpctl rotate-keys (issue #15 finding 5): new keys for both roles,
derived on both sides (no key on the wire), the old ones refused; a rotation
whose reply was lost is completed by the next login."""
import json

import jsonschema
import referencing

from pumpctl import console, paths
from pumpctl.fw import link_commands as lc
from pumpctl.keystore import KeyStore
from pumpctl.link import AuthError

SCHEMAS = paths.ROOT / "host_tools" / "pumpctl" / "schemas"


def validate(obj, name):
    reg = referencing.Registry().with_resources(
        ("https://pumpctl.invalid/schemas/" + p.name, referencing.Resource.from_contents(json.loads(p.read_text())))
        for p in SCHEMAS.glob("*.json"))
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / (name + ".schema.json")).read_text()),
                                    registry=reg).validate(obj)


def test_rotate_keys_replaces_both_keys_and_the_old_ones_no_longer_log_in(pump, capsys):
    old = {r: pump.key(r) for r in ("patient", "clinician")}
    rc, out, err = pump.pumpctl(capsys, "rotate-keys", "--yes", "--json")
    assert rc == 0, err
    validate(json.loads(out), "rotate-keys")
    new = {r: pump.key(r) for r in ("patient", "clinician")}
    assert all(new[r] != old[r] for r in new)
    assert all(k.hex() not in out + err for k in list(new.values()) + list(old.values()))
    assert pump.call(lc.STATUS, role="patient")["state"] and pump.call(lc.STATUS)["state"]
    store = KeyStore(pump.keystore)
    store.put(pump.serial, old["patient"], old["clinician"])  # a programmer with the old keys
    rc, _, err = pump.pumpctl(capsys, "status")
    assert rc == console.EXIT_AUTH and "Traceback" not in err


def test_a_dry_run_or_a_cancel_leaves_the_keys_as_they_were(pump, capsys):
    before = json.loads(pump.keystore.read_text())
    assert pump.pumpctl(capsys, "rotate-keys", "--dry-run")[0] == 0
    assert pump.pumpctl(capsys, "rotate-keys")[0] == console.EXIT_CANCELLED  # not confirmed: no terminal
    assert json.loads(pump.keystore.read_text()) == before
    assert pump.call(lc.STATUS)["state"]


def test_a_rotation_whose_reply_was_lost_is_completed_by_the_next_login(pump, capsys, monkeypatch):
    from pumpctl import link

    def lost_reply(self, mtype, payload=None):
        if mtype == lc.ROTATE_KEYS:
            real(self, mtype, payload)  # carried out by the pump...
            raise link.LinkError("no reply from the pump after 3 tries")  # ...its reply lost
        return real(self, mtype, payload)

    real = link.Client.request
    monkeypatch.setattr(link.Client, "request", lost_reply)
    rc, _, err = pump.pumpctl(capsys, "rotate-keys", "--yes")
    assert rc == console.EXIT_LINK
    monkeypatch.undo()
    assert "next" in json.loads(pump.keystore.read_text())["pumps"][pump.serial]
    rc, _, err = pump.pumpctl(capsys, "status")  # the old key fails, the next one opens: kept
    assert rc == 0, err
    assert "next" not in json.loads(pump.keystore.read_text())["pumps"][pump.serial]
    try:
        c = pump.client("clinician")
        c.close()
    except AuthError as e:
        raise AssertionError("the key store's key does not log in: %s" % e)
