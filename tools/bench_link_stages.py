# Where a sealed request's time goes on the pump (issue #18), on the
# MicroPython unix port (tools/bench.py runs it; `make bench`): the stages of
# tools/link_stages.py, beside a whole STATUS frame handled by the link of a
# clinician session (the stages plus dispatch and the write; the host's
# sealing of the request is timed apart and taken off). Medians in
# microseconds. Prints one JSON object.
import sys

root = sys.path[0] + "/.."
sys.path[1:1] = [root + "/firmware", root + "/boards/unix", root + "/tests/firmware"]

import aead  # noqa: E402
import link_commands as lc  # noqa: E402
from link_stages import _median_us, stages  # noqa: E402
from test_link import clinician  # noqa: E402

ROUNDS = 300


def main():
    pump, link, host, _ = clinician()
    parts, reply_bytes = stages(link, ROUNDS)
    mid = [100]

    def whole():
        # A new id each time: carried out, never answered from the reply cache.
        mid[0] = mid[0] % 60000 + 1
        link._frame(host.s.seal(lc.STATUS, mid[0], None))
        host.io.from_pump = bytearray()

    total = _median_us(whole, ROUNDS) - _median_us(lambda: host.s.seal(lc.STATUS, 9, None), ROUNDS)
    print('{"link_stages_us": {%s}, "link_frame_us": %d, "link_stage_sum_us": %d, "reply_bytes": %d, '
          '"aead_impl": "%s"}' % (", ".join('"%s": %d' % kv for kv in parts.items()), total,
                                  sum(parts.values()), reply_bytes, aead.IMPL))


main()
