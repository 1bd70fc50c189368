"""The soak run's bookkeeping (benchmarks/serving_soak.py): which answers count as answered, refused as designed,
retry or lost, and its table; the run itself is a benchmark (30 minutes, outside CI)."""

import httpx
import pytest

from benchmarks.serving_soak import KINDS, markdown, outcome, summary
from helpers.machine import machine


def answer(status: int, body: dict) -> httpx.Response:
    return httpx.Response(status, json=body)


ERROR = {"error": {"message": "num_inference_steps=10000000 is more than the 100 allowed", "type": "invalid_request_error"}}


@pytest.mark.parametrize(
    "kind, response, expected",
    [
        ("generate", answer(200, {"data": [{"b64_json": "..."}]}), "answered"),
        ("generate", answer(200, {"data": []}), "lost"),  # a 200 without a picture
        ("generate", answer(500, {"error": {"message": "The picture could not be drawn"}}), "lost"),
        ("generate", answer(503, {"error": {"message": "The replica stopped: retry"}}), "retry"),
        ("generate", None, "lost"),  # no answer at all
        ("generate", httpx.Response(500, text="Internal Server Error"), "lost"),
        ("steps-over-limit", answer(400, ERROR), "refused"),
        ("steps-over-limit", answer(200, {"data": [{"b64_json": "..."}]}), "lost"),  # drawn, though over the limit
        ("body-over-limit", answer(400, ERROR), "lost"),  # another status than designed (413)
        ("wrong-key", answer(401, {"detail": "no"}), "lost"),  # not in OpenAI's shape
    ],
)
def test_each_answer_is_counted_as_designed_or_lost(kind, response, expected):
    assert outcome(kind, response) == expected


def test_the_summary_counts_and_the_table():
    log = [("generate", "answered", 1.0, 200, 1), ("generate", "answered", 3.0, 200, 2), ("edit", "lost", 300.0, None, 1),
           ("seed-over-limit", "refused", 0.1, 400, 1)]
    results = {"machine": machine(), "model": "shapes", "variant": "FP16", "minutes": 1, "clients": 2, "killed_at_s": [30.0],
               "requests": log, "memory": {"11": [(0, 500.0, 290.0), (60, 510.0, 290.0)]}}
    total = summary(results)
    assert total["outcomes"] == {"answered": 2, "refused": 1, "retry": 0, "lost": 1} and total["retried"] == 1
    assert total["by_kind"]["edit"]["lost"] == 1 and set(total["by_kind"]) == set(KINDS)
    assert total["memory"]["11"]["growth_pct"] == pytest.approx(2.0)
    page = markdown(results)
    assert "**4 requests: 2 answered, 1 refused as designed, 1 lost**" in page and "| 11 | 0.0 – 1.0 | 500 → 510 | 290 → 290 | +2.0 % |" in page
