"""Client of the emulator's bench port (JSON lines over an AF_UNIX socket)."""
import json
import socket


class BenchError(RuntimeError):
    pass


class BenchClient:
    def __init__(self, path: str, timeout: float = 120.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.rx = self.sock.makefile("rb")

    def call(self, cmd: str, **args) -> dict:
        self.sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        line = self.rx.readline()
        if not line:
            raise BenchError("bench: emulator closed the connection")
        reply = json.loads(line)
        if not reply.pop("ok", False):
            raise BenchError(reply.get("error", "bench: command failed"))
        return reply

    def close(self):
        self.rx.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
