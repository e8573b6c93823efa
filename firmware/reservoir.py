# Reservoir ledger: what is in the pump and where it went, counted in strokes
# (exact) and reported in nL. Every completed stroke debits it once.
import array

from scheduler import KIND_PERIODIC

_KINDS = KIND_PERIODIC + 1


class Reservoir:
    def __init__(self, capacity_nl, stroke_nl):
        self.capacity_nl = capacity_nl
        self.stroke_nl = stroke_nl
        self.remaining_nl = 0
        self.strokes = array.array("i", [0] * _KINDS)  # lifetime strokes by kind

    def fill(self, volume_nl):
        self.remaining_nl = volume_nl

    def debit_stroke(self, kind):
        self.strokes[kind] += 1
        self.remaining_nl -= self.stroke_nl

    def total_strokes(self):
        return sum(self.strokes)
