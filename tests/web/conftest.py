"""Fixtures of the `pumpctl web` tests: a fresh provisioned virtual-time
emulator (tests/e2e/linkkit.py), the app on it, and the app served by
waitress on 127.0.0.1 for the browser tests."""
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webkit import Browser, make_app  # noqa: E402
from linkkit import Pump  # noqa: E402
from pumpctl.web.app import WebConfig, create_app  # noqa: E402
from pumpctl.web.security import Guard  # noqa: E402


@pytest.fixture
def pump(tmp_path):
    p = Pump(tmp_path)
    yield p
    p.stop()


@pytest.fixture
def browser_app(pump, tmp_path):
    app, guard = make_app(pump, tmp_path)
    b = Browser(app, guard)
    b.connect(pump.port)
    return b


@pytest.fixture
def served(pump, tmp_path):
    """The app served by waitress on 127.0.0.1 (a free port): (base URL, pump, guard, server)."""
    from waitress.server import create_server
    guard = Guard()
    app = create_app(WebConfig(pump=pump.port, keystore=str(pump.keystore), state=str(tmp_path / "state"),
                               report_dir=str(tmp_path / "reports")), guard)
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    port = int(getattr(server, "effective_port"))
    guard.bind(port)

    def serve():
        try:
            server.run()
        except OSError:  # its socket closed under select() at the end of the test
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d" % port, pump, guard, server
    finally:
        server.close()
        server.task_dispatcher.shutdown()
        t.join(5)
