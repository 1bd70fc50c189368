"""The benchmark's report: whole-image times derived from the results JSON, its markdown tables and its chart."""

from __future__ import annotations

from pathlib import Path

from benchmarks.plan import ENGINES, GOALS, PICTURE_SIDE, input_sizes, part_engine, report_order
from benchmarks.runner import machine_line
from helpers.settings import LCM_RECIPE, STANDARD_RECIPE

WHOLE_IMAGE_COLUMNS = ("LCM image s", "standard image s", "LCM vs fp32", "step TFLOP/s")


def engine_name(engine: str) -> str:
    """``ov-INT8`` → ``OpenVINO INT8``, ``torch-fp32`` → ``PyTorch fp32``."""
    return engine.replace("torch-", "PyTorch ").replace("ov-", "OpenVINO ")


def part_columns(results: dict) -> dict[str, tuple[str, str]]:
    """The engine table's columns of part times: column → (component, size label), at the results' sizes (the
    quick mode's are smaller): T5, the transformer's step at batch 1 and 2 and at half the side, the VAE."""
    sizes = input_sizes(results.get("quick", False))
    columns = {"T5 encode s": ("text_encoder", "120 tokens")}
    columns |= {f"step {size} s": ("transformer", size) for size in sizes["transformer"]}
    return columns | {f"VAE {size} s": ("vae_decoder", size) for size in sizes["vae_decoder"]}


def derived(results: dict) -> dict:
    """Each engine's part times, and whole-image times from them (LCM: encode + its steps + decode; standard:
    encode ×2 + its guided steps + decode)."""
    steps, columns = results.get("steps", {}), part_columns(results)
    encode, step1, step2, _, decode = columns  # the column names, in part_columns' order

    def median(engine, component, size):
        entry = steps.get(f"latency {part_engine(engine, component)} {component}", {}).get(size)
        return entry["median"] if entry else None

    flops = steps.get("latency torch-fp32 transformer", {}).get(columns[step1][1], {}).get("flops")
    table = {}
    for engine in ENGINES:
        row = {column: median(engine, *where) for column, where in columns.items()}
        if None not in (row[step1], row[decode]):
            row["LCM image s"] = (row[encode] or 0) + LCM_RECIPE.num_inference_steps * row[step1] + row[decode]
        # guided: the prompt and the negative prompt are encoded apart and denoised together, as a batch of 2
        if None not in (row[step2], row[decode]):
            row["standard image s"] = 2 * (row[encode] or 0) + STANDARD_RECIPE.num_inference_steps * row[step2] + row[decode]
        if flops and row[step1]:
            row["step TFLOP/s"] = flops / row[step1] / 1e12
        table[engine_name(engine)] = row
    base = table[engine_name("torch-fp32")]
    for row in table.values():
        for key in ("LCM image s", "standard image s"):
            if row.get(key) and base.get(key):
                row[f"{key.split()[0]} vs fp32"] = base[key] / row[key]
    return table


def markdown(results: dict) -> str:
    sections = ([machine_line(results["machine"])], engine_table(results), matmul_peak_note(results), bf16_note(results),
                side_by_side_table(results), goals_table(results), steps_table(results))
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def engine_table(results: dict) -> list[str]:
    """Each engine's component times and the whole-image times derived from them."""
    table, columns = derived(results), (*part_columns(results), *WHOLE_IMAGE_COLUMNS)
    lines = ["| engine | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for name, row in table.items()]
    if any(row.get("T5 encode s") is None and row.get("LCM image s") for row in table.values()):
        lines += ["", "Image times leave out the T5 encode where its column has no figure."]
    return lines


def matmul_peak_note(results: dict) -> list[str]:
    step = results.get("steps", {}).get("matmul peak", {})
    peak = step.get("tflops")
    if not peak:
        return []
    return [f"Matrix-multiply peak (PyTorch, {step['side']}²): bf16 {peak['bf16']:.3g} TFLOP/s, fp32 {peak['fp32']:.3g} TFLOP/s."]


def bf16_note(results: dict) -> list[str]:
    """Why PyTorch bf16 has no figures, from the machine the results recorded (never the machine rendering them)."""
    if results["machine"]["bf16_instructions"]:
        return []
    return ["PyTorch bf16 not run: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so PyTorch emulates "
            "bf16 matrix multiplies (see the peak above); a full-size step would take hours."]


def side_by_side_table(results: dict, key: str = "W8A8 vs FP16 side by side", title: str | None = None) -> list[str]:
    """The variants' transformer step timed in turns (the step ``key``), with where the time goes."""
    side = results.get("steps", {}).get(key, {})
    title = title or f"Transformer step at {PICTURE_SIDE[results.get('quick', False)]}², batch 1"
    variants = [name for name, row in side.items() if isinstance(row, dict) and "median" in row]
    if len(variants) < 2:
        return []
    first = variants[0]
    fastest = min(variants, key=lambda name: side[name]["median"])
    lines = [f"{title}: {', '.join(variants)} timed in turns, in one process (where the time goes: OpenVINO's "
             f"per-node profile, summed by operation type). Fastest: {fastest}.", "",
             f"| variant | median s | speed-up | output cosine vs {first} | ms by op type (top 5) |", "|---|---|---|---|---|"]
    for variant in variants:
        row = side[variant]
        ops = ", ".join(f"{name} {ms:.0f}" for name, ms in list(row["ms by op type"].items())[:5])
        cosine = row.get(f"cosine vs {first}")
        lines.append(f"| {variant} | {row['median']:.3g} | {_fmt(row.get('speed-up'))} | {'—' if cosine is None else f'{cosine:.6f}'} | {ops} |")
    return lines


def sigma_2k_markdown(results: dict) -> str:
    """The PixArt-Σ-2K results: its one-step side by side, its decode, then every step's time and memory."""
    steps = results.get("steps", {})
    key = next((key for key in steps if key.startswith("Σ-2K step ")), None)
    title = f"PixArt-Σ-2K transformer (PixArt-XL shapes, sample size 256, no micro-conditions), one step at {key.removeprefix('Σ-2K step ') if key else ''}"
    sections = ([machine_line(results["machine"])], side_by_side_table(results, key, title) if key else [], decode_lines(steps),
                steps_table(results))
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def decode_lines(steps: dict) -> list[str]:
    """The Σ-2K VAE decodes (whole, in tiles): time and peak memory, or why there is none."""
    lines = []
    for key in (key for key in steps if key.startswith("Σ-2K decode ")):
        step, size = steps[key], key.removeprefix("Σ-2K decode ").removesuffix(" in tiles")
        what = f"SDXL VAE decoder, OpenVINO FP16, one {size} decode{' in tiles' if key.endswith(' in tiles') else ''}"
        if "error" in step:
            lines.append(f"- {what}: {step['error']}.")
            continue
        memory = step["memory"]
        lines.append(f"- {what} (cold): {step[size]['median']:.3g} s, peak {memory['anon_gib']:.1f} GiB anonymous + "
                     f"{memory['file_gib']:.2f} GiB file-backed.")
    return lines


def goals_table(results: dict) -> list[str]:
    """Each memory goal against the steps that measure it."""
    lines = ["| memory goal | GiB | measured: anon / total GiB |", "|---|---|---|"]
    for goal, limit, keys in GOALS:
        measured = []
        for key in keys:
            step = results.get("steps", {}).get(key)
            if step and "memory" in step:
                mem = step["memory"]
                ok = "meets it" if mem["anon_gib"] <= limit else "misses it"
                measured.append(f"{key}: {mem['anon_gib']:.1f} / {mem['total_gib']:.1f} ({ok})")
            elif step:
                measured.append(f"{key}: {step.get('error', 'failed')}")
        lines.append(f"| {goal} | ≤ {limit:g} | {'; '.join(measured) or 'not measured'} |")
    return lines


def steps_table(results: dict) -> list[str]:
    """Every step but the latencies (in the engine table), in the plan's order (steps the plan does not make after
    them, in the file's order): its time and peak memory."""
    lines = ["| step | seconds | peak anon GiB | peak file GiB | peak total GiB | note |", "|---|---|---|---|---|---|"]
    order = report_order()
    steps = results.get("steps", {})
    for key in sorted(steps, key=lambda k: order.index(k) if k in order else len(order)):
        step = steps[key]
        if key.startswith(("latency", "Σ-2K decode")) or key == "matmul peak":
            continue
        mem = step.get("memory", {})
        seconds = step.get("seconds") or step.get("image_seconds") or step.get("compile_seconds")
        note = step.get("error", "")
        if "compile_seconds" in step:
            note = f"compile {step['compile_seconds']:.1f} s" + (f", image {step['image_seconds']:.1f} s" if "image_seconds" in step else "")
        lines.append(f"| {key} | {_fmt(seconds)} | {_fmt(mem.get('anon_gib'))} | {_fmt(mem.get('file_gib'))} | {_fmt(mem.get('total_gib'))} | {note} |")
    return lines


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, columns = derived(results), list(part_columns(results))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key in zip(axes, (columns[1], columns[-1])):  # the picture's step at batch 1, its decode
        names = [n for n, row in table.items() if row.get(key)]
        ax.barh(names, [table[n][key] for n in names], color="#1f77b4")
        ax.set_xlabel("seconds")
        ax.set_title(key.replace(" s", ""))
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
