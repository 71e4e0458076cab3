"""Property tests (Hypothesis): every parser of text a user types — option values, URLs, camera specs, times —
either returns a value or raises one UserError whose message is one line; never another exception. Bounded:
300 examples per parser, no deadline (the 2 cores are shared), derandomized so CI is reproducible."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edge_stpm.runtime.loop.basler import parse_spec
from edge_stpm.common.bind import parse_bind
from edge_stpm.runtime.loop.sinks.mqtt import check_topic, parse_url
from edge_stpm.runtime.line.opcua import parse_user
from edge_stpm.runtime.loop.sinks.record import parse_time
from edge_stpm.contract.artifacts import parse_frame_size, parse_precisions
from edge_stpm.runtime.station.app import parse_roi as _roi
from edge_stpm.common.errors import UserError

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# text shaped like what users type: printable ASCII and some Unicode, digits and separators over-represented
TEXT = st.one_of(st.text(max_size=60),
                 st.text(alphabet="0123456789,.:x-+/@?=&%:abcdefghijklmnopqrstuvwxyz ", max_size=40))
PARSERS = {
    "basler spec": lambda t: parse_spec("basler://" + t),
    "--http bind": parse_bind,
    "--mqtt url": parse_url,
    "--mqtt-topic": check_topic,
    "--opcua-user": parse_user,
    "history --since": parse_time,
    "frame size": parse_frame_size,
    "--precision": parse_precisions,
    "--roi": _roi,
}


@pytest.mark.parametrize("name", list(PARSERS))
def test_parsers_return_or_raise_one_line_user_error(name: str) -> None:
    parse = PARSERS[name]

    @FUZZ
    @given(TEXT)
    def check(text: str) -> None:
        try:
            parse(text)
        except UserError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg, (text, msg)

    check()
