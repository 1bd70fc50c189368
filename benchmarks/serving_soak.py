"""A soak run of the images API: good and bad requests from several clients for half an hour, against 2 replicas, one
of them killed twice; what was answered, refused as designed and lost, the latency, each replica's memory.

    python -m helpers convert --model shapes          # model/shapes/FP16
    python benchmarks/serving_soak.py                 # results/serving-soak-shapes.json and .md (30 minutes)

Each client sends, one after another, a request drawn at random (seeded) from :data:`KINDS`: pictures and edits of
the shapes model at 256² (its recipe, 20 guided steps), and requests the server must refuse (each with the status it
must answer). A 503 that says retry is what a killed replica's request gets: the client retries it once, as the
``openai`` client does. Lost: no answer, or another status than designed. Each painter's resident memory (anonymous
and file-backed, from ``/proc``) is sampled every 30 s.
"""

import argparse
import io
import json
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.runner import RESULTS, machine_line, save_with_page
from helpers.machine import machine
from helpers.settings import MODEL_ROOT

KEY = "soak-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD = {"prompt": "a red circle at the top left on a blue background", "size": "256x256"}
# kind: (share of requests, the status the server must answer)
KINDS = {
    "generate": (0.60, 200), "edit": (0.10, 200),
    "steps-over-limit": (0.05, 400), "prompt-over-limit": (0.05, 400), "seed-over-limit": (0.05, 400),
    "size-not-a-bin": (0.04, 400), "not-json": (0.04, 400), "body-over-limit": (0.04, 413), "wrong-key": (0.03, 401),
}


def picture_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (40, 60, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def send(client: httpx.Client, url: str, kind: str, seed: int, picture: bytes) -> httpx.Response:
    """One request of ``kind``."""
    post = lambda body, **options: client.post(f"{url}/images/generations", **({"json": body} | options))  # noqa: E731
    headers = {**AUTH, "Content-Type": "application/json"}
    if kind == "edit":
        data = {"prompt": GOOD["prompt"], "seed": str(seed), "strength": "0.6"}
        return client.post(f"{url}/images/edits", files={"image": picture}, data=data, headers=AUTH)
    bodies = {
        "generate": {**GOOD, "seed": seed}, "steps-over-limit": {**GOOD, "num_inference_steps": 10_000_000},
        "prompt-over-limit": {**GOOD, "prompt": "a red circle " * 400}, "seed-over-limit": {**GOOD, "seed": 2**70},
        "size-not-a-bin": {**GOOD, "size": "1000x1000"},
    }
    if kind in bodies:
        return post(bodies[kind], headers=AUTH)
    if kind == "not-json":
        return post(None, content=b"prompt=a cat", headers=headers)
    if kind == "body-over-limit":
        return post(None, content=json.dumps({"prompt": "a" * 100_000}).encode(), headers=headers)
    return post({**GOOD, "seed": seed}, headers={"Authorization": "Bearer wrong"})  # wrong-key


def error_message(response: httpx.Response) -> str | None:
    """The message of an answer in OpenAI's error shape; None for any other body (a bare "Internal Server Error")."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return message if isinstance(message, str) else None


def outcome(kind: str, response: httpx.Response | None) -> str:
    """``answered`` (a picture), ``refused`` (the designed error, in OpenAI's shape), ``retry`` (a 503 that says
    retry) or ``lost``."""
    if response is None:
        return "lost"
    designed = KINDS[kind][1]
    if response.status_code == 503 and "retry" in (error_message(response) or ""):
        return "retry"
    if response.status_code != designed:
        return "lost"
    if designed == 200:
        return "answered" if response.json().get("data") else "lost"
    return "refused" if error_message(response) else "lost"


def client_loop(url: str, until: float, index: int, log: list, picture: bytes) -> None:
    """One client's requests until ``until``; each logged as (kind, outcome, seconds, status, tries)."""
    chooser = random.Random(index)
    kinds, shares = list(KINDS), [share for share, _ in KINDS.values()]
    with httpx.Client(timeout=300) as client:
        while time.time() < until:
            kind, seed = chooser.choices(kinds, shares)[0], chooser.randrange(2**32)
            start, result, status = time.perf_counter(), "lost", None
            for tries in (1, 2):  # a 503 that says retry: once more, as the openai client does
                try:
                    response = send(client, url, kind, seed, picture)
                except httpx.HTTPError:
                    response = None
                result, status = outcome(kind, response), response.status_code if response is not None else None
                if result != "retry":
                    break
            log.append((kind, result, time.perf_counter() - start, status, tries))


def painter_processes() -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if "ServeReplica:pixart:Painter" in " ".join(p.info["cmdline"] or [])]


def resident_mib(process) -> dict[str, float]:
    """A process's resident memory: anonymous and file-backed (``/proc/<pid>/status``), MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[key].split()[0]) / 1024 for name, key in (("anonymous", "RssAnon"), ("file", "RssFile"))}


def sample_memory(samples: dict, stop: threading.Event, every: float = 30) -> None:
    """Each painter's memory every ``every`` seconds, by pid: [(seconds since start, anonymous, file), ...]."""
    start = time.time()
    while not stop.wait(0 if not samples else every):
        for process in painter_processes():
            try:
                memory = resident_mib(process)
            except (FileNotFoundError, ProcessLookupError):
                continue  # killed between the listing and the read
            samples.setdefault(process.pid, []).append((time.time() - start, memory["anonymous"], memory["file"]))


def kill_a_painter() -> None:
    """SIGKILL (as a crash would) the painter started last: the first kill takes one of the two, the second its
    replacement, so one painter lives through the whole run (its memory is the run's)."""
    import signal

    newest = max(painter_processes(), key=lambda process: process.create_time())
    newest.send_signal(signal.SIGKILL)


def warm_up(url: str, picture: bytes) -> None:
    """Pictures and edits, two at a time (one a replica), before memory is first sampled: a replica's first call of
    each kind allocates what it keeps (tens of MiB), which is no growth."""
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(2) as pool:
        for kind in ("generate", "edit") * 3:
            list(pool.map(lambda seed: send(client, url, kind, seed, picture), range(2)))


def soak(folder: Path, minutes: float, clients: int, kills: int) -> dict:
    from helpers.serving import build_app, deploy, shutdown, start_ray

    start_ray(num_cpus=2)
    try:
        url = deploy(build_app(folder, replicas=2, threads=1, api_key=KEY), port=8000)
        picture = picture_png()
        warm_up(url, picture)
        log, samples, stop = [], {}, threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(samples, stop), daemon=True)
        sampler.start()
        begin = time.time()
        until = begin + 60 * minutes
        with ThreadPoolExecutor(clients) as pool:
            running = [pool.submit(client_loop, url, until, index, log, picture) for index in range(clients)]
            killed_at = []
            for k in range(1, kills + 1):  # evenly spread over the run
                time.sleep(max(0.0, begin + 60 * minutes * k / (kills + 1) - time.time()))
                kill_a_painter()
                killed_at.append(time.time() - begin)
            [client.result() for client in running]  # a client that failed fails the run, not silently
        stop.set()
        sampler.join()
    finally:
        shutdown()
    return {"machine": machine(), "model": folder.parent.name, "variant": folder.name, "minutes": minutes,
            "clients": clients, "killed_at_s": killed_at, "requests": log, "memory": samples}


def summary(results: dict) -> dict:
    """Counts by outcome and kind, latency of the pictures, and each painter's memory from first to last sample."""
    log = results["requests"]
    outcomes = {name: sum(entry[1] == name for entry in log) for name in ("answered", "refused", "retry", "lost")}
    by_kind = {kind: {name: sum(entry[0] == kind and entry[1] == name for entry in log) for name in outcomes} for kind in KINDS}
    seconds = [entry[2] for entry in log if entry[1] == "answered"]
    cuts = statistics.quantiles(seconds, n=20) if len(seconds) > 1 else [float("nan")] * 19
    memory = {pid: {"from_s": rows[0][0], "to_s": rows[-1][0], "anonymous_mib": (rows[0][1], rows[-1][1]),
                    "file_mib": (rows[0][2], rows[-1][2]), "growth_pct": 100 * (rows[-1][1] / rows[0][1] - 1)}
              for pid, rows in results["memory"].items()}
    retried = sum(entry[4] == 2 for entry in log)
    return {"outcomes": outcomes, "by_kind": by_kind, "retried": retried, "p50_s": cuts[9], "p95_s": cuts[18], "memory": memory}


def markdown(results: dict) -> str:
    total = summary(results)
    counts = total["outcomes"]
    lines = [
        f"# Soak run: the images API over {results['model']} ({results['variant']}), 2 replicas × 1 thread\n",
        f"{machine_line(results['machine'])} Local Ray with 2 CPUs.\n",
        f"{results['minutes']:g} minutes, {results['clients']} clients, each sending one request after another "
        f"(pictures and edits at 256², 20 guided steps; requests to refuse); a painter killed at "
        f"{', '.join(f'{s / 60:.1f}' for s in results['killed_at_s'])} min.\n",
        f"**{sum(counts.values())} requests: {counts['answered']} answered, {counts['refused']} refused as designed, "
        f"{counts['lost']} lost**; {total['retried']} got a 503 that said retry and were sent again "
        f"({counts['retry']} got it twice). Pictures: p50 "
        f"{total['p50_s']:.2f} s, p95 {total['p95_s']:.2f} s (a retry's wait included).\n",
        "| kind | designed answer | answered | refused | retry, twice | lost |", "|---|---|---|---|---|---|",
    ]
    for kind, counts in total["by_kind"].items():
        lines.append(f"| {kind} | {KINDS[kind][1]} | {counts['answered']} | {counts['refused']} | {counts['retry']} | {counts['lost']} |")
    lines += ["", "Each painter's resident memory from its first sample to its last (every 30 s; a killed painter's "
              "last is its last before the kill), MiB:", "",
              "| painter pid | from – to (min) | anonymous | file-backed | anonymous growth |", "|---|---|---|---|---|"]
    for pid, row in total["memory"].items():
        lines.append(f"| {pid} | {row['from_s'] / 60:.1f} – {row['to_s'] / 60:.1f} | {row['anonymous_mib'][0]:.0f} → "
                     f"{row['anonymous_mib'][1]:.0f} | {row['file_mib'][0]:.0f} → {row['file_mib'][1]:.0f} | "
                     f"{row['growth_pct']:+.1f} % |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=MODEL_ROOT / "shapes" / "FP16", help="the variant folder to serve")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = soak(args.folder, args.minutes, args.clients, args.kills)
    print(save_with_page(args.out / f"serving-soak-{results['model']}.json", results, markdown(results)))


if __name__ == "__main__":
    main()
