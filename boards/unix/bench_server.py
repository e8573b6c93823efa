# Bench port of the emulated board: JSON lines over an AF_UNIX socket. Test
# equipment, separate from the programmer link (a real Pico has no such port).
import json
import os
import select
import socket
import struct

_MAX_LINE = 4096


def _sockaddr(path):
    # The unix port takes a raw sockaddr_un, not a path string.
    return struct.pack("H", socket.AF_UNIX) + path.encode() + b"\0"


class BenchServer:
    def __init__(self, path, poller):
        self.path = path
        try:
            os.remove(path)
        except OSError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(_sockaddr(path))
        self.sock.listen(4)
        self.poller = poller
        poller.register(self.sock, select.POLLIN)
        self.pending = {}  # client socket -> bytes received so far

    def owns(self, obj):
        return obj is self.sock or obj in self.pending

    def requests(self, obj, event):
        # Yields (client, request dict) for each complete line from `obj`.
        if obj is self.sock:
            client, _ = self.sock.accept()
            self.pending[client] = b""
            self.poller.register(client, select.POLLIN)
            return
        data = obj.recv(_MAX_LINE) if event & select.POLLIN else b""
        if not data:
            self._drop(obj)
            return
        buf = self.pending[obj] + data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                self.reply(obj, {"ok": False, "error": "bench: not a JSON object: %r" % line[:80]})
                continue
            yield obj, req
        if len(buf) > _MAX_LINE:
            buf = b""
        if obj in self.pending:
            self.pending[obj] = buf

    def reply(self, client, obj):
        try:
            client.send(json.dumps(obj).encode() + b"\n")
        except OSError:
            self._drop(client)

    def _drop(self, client):
        self.poller.unregister(client)
        self.pending.pop(client, None)
        client.close()

    def close(self):
        for c in list(self.pending):
            self._drop(c)
        self.sock.close()
        try:
            os.remove(self.path)
        except OSError:
            pass
