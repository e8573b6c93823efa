import pytest

from linkkit import Pump
from pumpctl.emulator import Emulator


@pytest.fixture
def virtual_pump(tmp_path):
    emu = Emulator(tmp_path / "pump", virtual=True).start()
    yield emu
    emu.stop()


@pytest.fixture
def pump(tmp_path):
    """A provisioned emulated pump in virtual time (tests/e2e/linkkit.py)."""
    p = Pump(tmp_path)
    yield p
    p.stop()
