"""Issue #15 finding 5 (keys at rest), the host side: the emulator's flash
image (it holds the pump's keys, as a board's flash does) and everything in
its state folder are the owner's only; keys are never printed, and keys that
cannot be stored are kept in a private file, not on the screen."""
import json
import os
import stat

from pumpctl import cli
from pumpctl.emulator import Emulator
from pumpctl.fw import link_commands as lc
from pumpctl.keystore import KeyStore
from pumpctl.link import Client, open_port


def private(path):
    return stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def test_the_state_folder_and_flash_image_are_the_owners_only(virtual_pump):
    state = virtual_pump.state_dir
    assert private(state) and private(virtual_pump.image)
    for name in ("emulator.lock", "emulator.log", "port.json"):
        if (state / name).exists():
            assert private(state / name), name


def test_an_image_made_readable_by_others_is_made_private_at_the_next_start(tmp_path):
    emu = Emulator(tmp_path / "pump", virtual=True).start()
    emu.stop()
    os.chmod(emu.image, 0o644)
    emu.start()
    try:
        assert private(emu.image)
    finally:
        emu.stop()


def test_keys_that_cannot_be_stored_are_kept_privately_and_never_printed(virtual_pump, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = blocker / "keys.json"  # its folder cannot be made: saving fails
    rc = cli.main(["provision", "--port", virtual_pump.port, "--keystore", str(store)])
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_AUTH and "could not save the keys" in err
    kept = next(w for w in err.replace("(", " ").split() if w.endswith(".json") and "pumpctl-keys-" in w)
    assert private(kept)
    entry = next(iter(json.loads(open(kept).read())["pumps"].values()))
    for key in (entry["patient"], entry["clinician"]):
        assert key not in out + err and key.upper() not in out + err
    # The file kept is a key store: the pump answers with its keys.
    serial = Client(open_port(virtual_pump.port)).identify()["serial"]
    c = Client(open_port(virtual_pump.port))
    try:
        c.login("clinician", KeyStore(kept).get(serial, "clinician"))
        assert c.request(lc.STATUS)["state"]
    finally:
        c.close()
        os.unlink(kept)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_a_key_store_is_written_owner_only_and_leaves_no_temporary_file(tmp_path):
    store = KeyStore(tmp_path / "cfg" / "keys.json")
    store.put("EMU-1", b"\1" * 32, b"\2" * 32)
    assert private(store.path) and private(store.path.parent)
    assert [p.name for p in store.path.parent.iterdir()] == ["keys.json"]
