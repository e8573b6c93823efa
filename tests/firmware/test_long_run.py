# Months of flex dosing in virtual time: the stroke record matches the
# prescription to the stroke, with no drift.
from fixtures import DAY_MS, expected_basal_strokes, flex, make_pump, run, strokes, within_one_stroke

FLEX = [(0, 8000000), (6 * 3600, 12000000), (12 * 3600, 10000000), (22 * 3600, 6000000)]


def test_180_days_of_flex_dosing_match_the_prescription_to_the_stroke():
    pump = make_pump(flex(FLEX), tod_s=5 * 3600 + 17)
    for day in range(180):
        if day % 15 == 0:
            pump.reservoir.fill(20000000)  # refill visits (the reservoir issue does this for real)
        run(pump, DAY_MS)
        if day in (0, 29, 89, 179):
            within_one_stroke(strokes(pump), expected_basal_strokes(pump, 5 * 3600 + 17, (day + 1) * 86400))
    assert pump.reservoir.total_strokes() == strokes(pump)
