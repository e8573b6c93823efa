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


def _text(data):
    try:
        return data.decode()
    except UnicodeError:
        return repr(data)


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
        self.skipping = set()  # clients whose over-long line is still arriving

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
            if obj in self.skipping:  # the end of a line refused already
                self.skipping.remove(obj)
                continue
            req = self._parse(obj, line)
            if req is not None:
                yield obj, req
        if len(buf) > _MAX_LINE and obj not in self.skipping:
            # Refused at once, not left waiting for a newline: one reply per
            # request, so the rest of this line is dropped unanswered.
            self._refuse(obj, "request longer than %d bytes" % _MAX_LINE)
            self.skipping.add(obj)
        if obj in self.skipping:
            buf = b""
        if obj in self.pending:
            self.pending[obj] = buf

    def _parse(self, client, line):
        if len(line) > _MAX_LINE:
            self._refuse(client, "request longer than %d bytes" % _MAX_LINE)
            return None
        try:
            req = json.loads(line)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self._refuse(client, "not a JSON object: %s (a request is one line like {\"cmd\": \"status\"})"
                         % _text(line[:80]))
            return None
        return req

    def _refuse(self, client, why):
        self.reply(client, {"ok": False, "error": "bench: " + why})

    def reply(self, client, obj):
        try:
            client.sendall(json.dumps(obj).encode() + b"\n")  # a page of stroke times is ~50 KB
        except OSError:
            self._drop(client)

    def _drop(self, client):
        if client not in self.pending:  # dropped already (a reply that failed)
            return
        self.poller.unregister(client)
        self.pending.pop(client, None)
        self.skipping.discard(client)
        client.close()

    def close(self):
        for c in list(self.pending):
            self._drop(c)
        self.sock.close()
        try:
            os.remove(self.path)
        except OSError:
            pass
