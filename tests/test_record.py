"""The record of one pipeline call: its counts and how it reads."""

from helpers.record import CallRecord, Recorder


def test_a_record_counts_steps_from_the_transformer_calls():
    record = Recorder().start(4, step_cache=True)
    for seconds in (0.5, 0.25, 0.25, 0.5):
        record.add("transformer", seconds)
    record.add("text_encoder", 0.1)
    record.reused, record.downsampled = 1, 2
    assert (record.steps, record.computed, record.total_seconds("transformer")) == (4, 3, 1.5)
    assert record.steps_summary() == "4 steps (3 computed, 1 reused; 2 downsampled)"
    assert record.describe() == "4 steps (3 computed, 1 reused; 2 downsampled): transformer 1.5 s, T5 0.1 s"


def test_without_the_step_cache_a_record_says_nothing_of_reuse():
    record = Recorder().start(2)
    record.add("transformer", 1.0)
    assert record.reused is None and record.computed == 1 and record.steps_summary() == "1 steps"
    assert CallRecord().describe() == "0 steps"
