"""Issue #15 finding 6: while pumpctl has the pump's port no other program
can open it (TIOCEXCL, not just pyserial's advisory flock), so none can read
the replies meant for pumpctl; the port is free again after pumpctl closes
it, or is killed."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from pumpctl.link import open_port

# Another program opening the port, as an ordinary user (root may open an
# exclusive terminal: CAP_SYS_ADMIN).
OPENER = """
import os, sys
if os.getuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
try:
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY))
    print("opened")
except OSError as e:
    print(os.strerror(e.errno), e.errno)
"""


@pytest.fixture
def port(virtual_pump):
    path = virtual_pump.port
    mode = os.stat(path).st_mode
    os.chmod(path, 0o666)  # the other program may open it, but for exclusivity
    yield path
    os.chmod(path, mode)


def other_program_opens(path):
    out = subprocess.run([sys.executable, "-c", OPENER, path], capture_output=True, text=True, timeout=30).stdout
    return out.strip()


def test_no_other_program_can_open_the_port_pumpctl_holds(port):
    held = open_port(port)
    try:
        assert other_program_opens(port) == "%s %d" % (os.strerror(errno.EBUSY), errno.EBUSY)
    finally:
        held.close()


def test_the_port_is_free_again_when_pumpctl_closes_it(port):
    open_port(port).close()
    assert other_program_opens(port) == "opened"


def test_the_port_is_free_again_soon_after_pumpctl_is_killed(port):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pumpctl.link import open_port\n"
                               "p = open_port(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(60)", port],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert other_program_opens(port).endswith(str(errno.EBUSY))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    deadline = time.monotonic() + 10
    while other_program_opens(port) != "opened":
        assert time.monotonic() < deadline, "the port stayed exclusive after its holder was killed"
        time.sleep(0.2)
