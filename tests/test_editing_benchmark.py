"""The editing benchmark (``benchmarks/editing.py``): its speed mode end to end on the tiny model (``--quick``), its
quality rows on ``tiny-standard`` (random weights, 256², 4 steps: the scores mean nothing there, the code runs), the cases it edits,
and both reports."""

from benchmarks import editing
from helpers.shapes import SHAPES


def test_quick_speed_times_the_encoder_against_pytorch_and_an_edit_at_half_the_steps(tmp_path):
    results = editing.main(["speed", "--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "results")])
    steps = results["steps"]
    assert not {key: step["error"] for key, step in steps.items() if "error" in step}
    encoder = steps["VAE encoder 256²"]
    assert encoder["openvino"].startswith("OpenVINO FP16") and len(encoder["turns"]) >= 2  # PyTorch bf16 (where it runs), f32
    assert all(name.endswith("channels_last") and cosine > 0.99 for name, cosine in encoder["cosine"].items())
    calls = steps["picture and edit 256²"]["turns"]
    assert [turn["steps"] for turn in calls["text-to-image"]] == [4, 4]  # the LCM recipe, two turns
    assert [turn["steps"] for turn in calls["edit at strength 0.5"]] == [2, 2]  # half the steps
    assert all("vae_encoder" in turn["parts"] for turn in calls["edit at strength 0.5"])
    assert not any("vae_encoder" in turn["parts"] for turn in calls["text-to-image"])
    report = (tmp_path / "results" / "editing-speed-tiny.md").read_text()
    assert "Machine: " in report and "| edit at strength 0.5 | 2 |" in report and "The edit ran 2 of 4 steps" in report


def test_each_case_asks_for_another_colour_and_a_shape_in_the_opposite_quarter():
    cases = editing.edit_cases(16, 256)
    assert len(cases) == 16 and all(case.picture.size == (256, 256) for case in cases)
    for case in cases:
        same = ("shape", "position", "background")
        assert [getattr(case.recoloured, a) for a in same] == [getattr(case.scene, a) for a in same]
        assert case.recoloured.color not in (case.scene.color, case.scene.background)
        if case.scene.position == "center":  # every quarter holds a part of it: no empty one
            assert case.added is None
        else:
            assert case.added.position == editing.OPPOSITE[case.scene.position] and case.added.shape in SHAPES
            assert case.added.shape != case.scene.shape and case.added.background == case.scene.background
    assert [case.recoloured for case in editing.edit_cases(16, 256)] == [case.recoloured for case in cases]  # the same each run


def test_quality_rows_and_their_report(tiny_standard_source, tiny_standard_variant, tmp_path):
    path = tmp_path / "editing-tiny-standard.json"
    results = editing.quality("tiny-standard", tiny_standard_source, tiny_standard_variant, 8, path, tmp_path, side=256, steps=4,
                              pytorch_kinds=("recolour 0.7",))  # PyTorch's tiny VAE takes seconds a picture: one row
    steps = results["steps"]
    assert not {key: step["error"] for key, step in steps.items() if "error" in step}
    assert list(steps["OpenVINO FP16"]["rows"]) == list(editing.KINDS)
    assert list(steps["PyTorch f32"]["rows"]) == ["recolour 0.7"]
    assert all(row["pictures"] == 8 for kind, row in steps["OpenVINO FP16"]["rows"].items() if kind != "inpaint")
    assert steps["OpenVINO FP16"]["rows"]["inpaint"]["pictures"] == sum(case.added is not None for case in editing.edit_cases(8, 256))
    report = path.with_suffix(".md").read_text()
    assert "Machine: " in report and "| PyTorch f32 | recolour 0.7: another colour | 8 |" in report
    assert "| OpenVINO FP16 | a new shape | 7 |" in report and "Failed: none." in report  # one of 8 scenes is centred
