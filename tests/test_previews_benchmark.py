"""The previews benchmark's quick mode runs the tiny model through the same code, and its table says what it measured."""

from benchmarks import previews


def test_the_quick_speed_run_times_each_call_and_each_previews_share(tiny_variant, tmp_path):
    results = previews.main(["speed", "--quick", "--folder", str(tiny_variant), "--out", str(tmp_path)])
    step = results["steps"]["speed 256²"]
    assert set(step["seconds"]) == {*previews.DECODERS, previews.STEP}
    assert all(len(row["runs"]) == 1 for row in step["seconds"].values())
    text = (tmp_path / "previews-quick.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {*previews.DECODERS, previews.STEP}
    assert rows["linear preview"].count("%") == 2 and rows[previews.STEP].count("—") == 2
    assert "The tiny decoder decodes" in text and "Machine: " in text


def test_a_previews_share_of_a_picture_counts_a_preview_after_every_step_but_the_last():
    seconds = {"linear preview": 0.01, "tiny decoder": 1.0, "VAE decoder": 6.0, previews.STEP: 2.0}
    assert previews.picture_share(seconds, "tiny decoder", 4) == f"{3 * 1.0 / (4 * 2.0 + 6.0):.2%}"
    assert previews.picture_share(seconds, "VAE decoder", 4) == "—"
    assert previews.picture_share({k: v for k, v in seconds.items() if k != previews.STEP}, "tiny decoder", 4) == "—"
