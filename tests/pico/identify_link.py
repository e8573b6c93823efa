# A minimal stand-in for the programmer link, for the board tests (the pump
# runs firmware/link.py): answers every line received with one JSON line
# identifying the board and the pump's state. It never commands the pump.
import json

from micropython import const

_RX_LEN = const(64)
_CR = const(13)
_LF = const(10)


class IdentifyLink:
    def __init__(self, board, pump, transport):
        self.board = board
        self.pump = pump
        self.transport = transport
        self.rx = bytearray(_RX_LEN)

    def backlog(self):
        return False  # it handles all it reads (firmware/link.py's Link may keep some for the next pass)

    def poll(self):
        n = self.transport.read_into(self.rx)
        for i in range(n):
            if self.rx[i] == _CR or self.rx[i] == _LF:
                self.transport.write(self.identity())
                return

    def identity(self):
        pump = self.pump
        report = self.board.info()
        report["firmware"] = pump.device["firmware"]
        status = pump.status()
        report["state"] = status["state"]
        report["alarms"] = [a["name"] for a in status["alarms"]]
        return (json.dumps(report) + "\r\n").encode()
