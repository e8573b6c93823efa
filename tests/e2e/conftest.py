import pytest

from pumpctl.emulator import Emulator


@pytest.fixture
def virtual_pump(tmp_path):
    emu = Emulator(tmp_path / "pump", virtual=True).start()
    yield emu
    emu.stop()
