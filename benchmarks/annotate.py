"""Benchmark: the mentoring web interface under scripted operators in headless Chromium.

Starts the real server (``mentoring annotate serve``, uvicorn, ``tests/servers.py``) on a
generated task set (``--images`` 128 px images with 1 to 3 detected areas each, six classes) and
drives the page with Playwright in Debian's headless Chromium (``/usr/bin/chromium``), by keyboard
only: each operator answers the current area (``h`` mostly, ``d`` or a class key ``1``-``6``
otherwise, seeded) and presses the next key as soon as the page is ready. Once with one operator,
once with four at the same time (four browser contexts, each its own operator, one server), each
on a fresh database.

Measured in the browser (an init script, before the page's own; browser clock):

a. **next area ready**: from the key's ``keydown`` (``event.timeStamp``) until the ``.current``
   area moved (a MutationObserver) and the next frame is produced (``requestAnimationFrame``
   then a message): target p95 <= 100 ms;
b. **next image shown**: after the key that answers an image's last area, until ``#canvas``
   names the next image and ``#image`` holds it decoded (``img.decode()``), and the next frame:
   target p95 <= 200 ms;
c. **verdict answer**: ``POST /api/verdict`` from the browser's Resource Timing, ``requestStart``
   to ``responseEnd`` (the server's work plus loopback): target median <= 20 ms;
d. **areas per minute** a scripted operator sustains (answers acknowledged by the server, over
   the time from the first key to the last acknowledgement, browser clock): target >= 600.

Also: the keys that did not answer an area (pressed on a prefetched image that another operator
took first: dropped by the page, with a message; or refused by the server), and (c) without
browsers on the machine: four operators over plain HTTP, each at the target pace (a verdict every
100 ms), against a fresh server, which says what of (c) is the server and what is the load of
four Chromium renderers on two cores. ``--think-ms`` makes the scripted operator pause before
each key. The operator's first image (the page load) is not counted.

Targets are reported with pass/fail; noise never fails the run (a shared 2-core machine:
``uptime`` is recorded before and after; the server, Chromium and this script share those
cores). Writes ``benchmarks/results/annotate.json``. ``--quick``: 40 images, for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/: the real server and the browser set-up of the e2e tests

from tests.e2e.helpers import CHROMIUM, chromium_missing, write_line  # noqa: E402
from tests.factories import area  # noqa: E402
from tests.servers import annotate_server  # noqa: E402

from mentoring.feedback.schema import TaskArea  # noqa: E402

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

HERE = Path(__file__).resolve().parent
CLASSES = ("scratch", "crack", "dent", "stain", "hole", "chip")
TARGETS = {"area_p95_ms": 100.0, "image_p95_ms": 200.0, "verdict_median_ms": 20.0}
TARGET_AREAS_PER_MIN = 600.0
#: how long a key may go without the page moving on before it counts as a stall
STALL_S = 2.0

# The probe, run before the page's script: its capture listener on document sees each key
# first; a MutationObserver sees the page move on; a frame later the sample is recorded.
PROBE = r"""
(() => {
  performance.setResourceTimingBufferSize(1000000);
  const B = (window.__bench = { samples: [], errors: [], switches: 0, waiters: [] });
  let pending = null;
  const snap = () => {
    const canvas = document.getElementById('canvas');
    const cur = document.querySelector('#area-layer g.area.current');
    const title = document.getElementById('image-title');
    return {
      image: canvas ? canvas.dataset.imageId || '' : '',
      area: cur ? cur.dataset.areaId : '',
      verdict: cur ? cur.dataset.verdict : '',
      open: document.querySelectorAll('#area-layer g.area[data-verdict=""]').length,
      empty: !!title && title.textContent === 'Nothing left to review',
    };
  };
  B.state = snap;
  const afterFrame = (fn) =>
    requestAnimationFrame(() => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => fn(performance.now());
      ch.port2.postMessage(0);
    });
  const record = (sample) => {
    B.samples.push(sample);
    const waiting = B.waiters;
    B.waiters = [];
    for (const w of waiting) w();
  };
  // resolves when `n` samples are recorded (or after `ms`), with the page's state
  B.wait = (n, ms) =>
    new Promise((resolve) => {
      const done = () => resolve({ n: B.samples.length, state: snap() });
      if (B.samples.length >= n) return done();
      const timer = setTimeout(done, ms);
      B.waiters.push(() => {
        if (B.samples.length >= n) {
          clearTimeout(timer);
          done();
        } else {
          B.waiters.push(done);
        }
      });
    });
  document.addEventListener('keydown', (e) => {
    const s = snap();
    if (B.firstKey === undefined) B.firstKey = e.timeStamp;
    const msg = document.getElementById('message');
    pending = { t0: e.timeStamp, key: e.key, image: s.image, area: s.area, seen: false,
                message: msg ? msg.textContent : '' };
  }, true);
  const check = () => {
    const s = snap();
    if (!pending || pending.seen) {
      if (!pending && s.image && B.lastImage && s.image !== B.lastImage) B.switches += 1;
      B.lastImage = s.image;
      return;
    }
    const p = pending;
    if (s.image !== p.image || s.empty) {
      p.seen = true;
      const tDom = performance.now();
      // the key was pressed on a prefetched image that another operator took first: the page
      // dropped it and shows the image the server handed out instead
      const msg = document.getElementById('message').textContent;
      const replaced = msg !== p.message && msg.includes('went to another operator first');
      const img = document.getElementById('image');
      const shown = s.empty ? Promise.resolve() : img.decode().catch(() => undefined);
      shown.then(() =>
        afterFrame((t) => {
          pending = null;
          B.lastImage = snap().image;
          record({ kind: replaced ? 'replaced' : 'image', key: p.key, from: p.image, to: s.image,
                   dom: tDom - p.t0, ms: t - p.t0, empty: s.empty,
                   ok: s.empty || (img.complete && img.naturalWidth > 0) });
        }));
    } else if (s.area !== p.area) {
      p.seen = true;
      const tDom = performance.now();
      afterFrame((t) => {
        pending = null;
        record({ kind: 'area', key: p.key, image: p.image, dom: tDom - p.t0, ms: t - p.t0 });
      });
    }
  };
  const start = () => {
    new MutationObserver(check).observe(document.body, {
      subtree: true, childList: true, attributes: true,
      attributeFilter: ['class', 'data-image-id'],
    });
    const msg = document.getElementById('message');
    if (msg) {
      new MutationObserver(() => {
        if (msg.dataset.kind === 'error') B.errors.push(msg.textContent);
      }).observe(msg, { childList: true, characterData: true, subtree: true, attributes: true });
    }
  };
  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
})();
"""

VERDICT_TIMINGS = """() => performance.getEntriesByType('resource')
  .filter((e) => e.name.endsWith('/api/verdict') || e.name.endsWith('/api/class'))
  .map((e) => ({ server: e.responseEnd - e.requestStart, ttfb: e.responseStart - e.requestStart,
                 total: e.duration, end: e.responseEnd }))"""


def make_tasks(root: Path, n_images: int, seed: int = 0) -> tuple[Path, int]:
    """``n_images`` 128 px images (16 x 16 cells of 8 px) with 1 to 3 areas each: the tasks
    file and the number of areas."""
    rng = random.Random(seed)
    images: dict[str, list[TaskArea]] = {}
    for i in range(n_images):
        image_id = f"new/pool/img-{i:05d}"
        cells = rng.sample(range(256), rng.randint(1, 3))
        areas = []
        for k, cell in enumerate(sorted(cells)):
            row, col = divmod(cell, 16)
            cls = rng.choice(CLASSES)
            box = (col * 8, row * 8, col * 8 + 8, row * 8 + 8)
            score = round(rng.uniform(0.5, 1.0), 3)
            areas.append(area(f"{image_id}/{cls}/{k}", cls, [(row, col)], box, score))
        images[image_id] = areas
    n_areas = sum(len(a) for a in images.values())
    return write_line(root, images, classes=CLASSES, grid=(16, 16)), n_areas


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _pct(values, 50),
        "p95": _pct(values, 95),
        "max": max(values) if values else None,
    }


async def login(page: Page, url: str, operator: str) -> None:
    await page.goto(url + "/login")
    await page.fill("#operator", operator)
    await page.click("#login-button")
    await page.wait_for_url(url + "/")
    await page.wait_for_selector("#area-layer g.area.current", state="attached")
    await page.wait_for_function("() => document.getElementById('image').complete")


async def operate(
    page: Page, name: str, seed: int, deadline: float, think_s: float = 0.0
) -> dict[str, Any]:
    """Answer areas by keyboard until the queue is empty (or the deadline); what was seen."""
    rng = random.Random(seed)
    keys: list[str] = []
    stalls = 0
    n = 0
    state = await page.evaluate("() => window.__bench.state()")
    start = time.monotonic()
    while not state["empty"] and time.monotonic() < deadline:
        r = rng.random()
        key = "h" if r < 0.6 else "d" if r < 0.85 else str(rng.randint(1, len(CLASSES)))
        if think_s:
            await asyncio.sleep(think_s)
        await page.keyboard.press(key)
        keys.append(key)
        got = await page.evaluate(
            "([n, ms]) => window.__bench.wait(n, ms)", [n + 1, STALL_S * 1000]
        )
        if got["n"] <= n and not got["state"]["empty"]:
            stalls += 1  # the page did not move on: look again, press again
        n = got["n"]
        state = got["state"]
    loop_s = time.monotonic() - start
    # wait until every answer is acknowledged: the server's count stops growing
    done_areas = -1
    for _ in range(100):
        status = await (await page.request.get(page.url.rstrip("/") + "/api/status")).json()
        mine = next((o for o in status["operators"] if o["operator"] == name), None)
        areas = mine["areas"] if mine else 0
        if areas == done_areas:
            break
        done_areas = areas
        await asyncio.sleep(0.2)
    acked_s = time.monotonic() - start
    bench = await page.evaluate(
        "() => ({ samples: window.__bench.samples, errors: window.__bench.errors,"
        " switches: window.__bench.switches, first_key: window.__bench.firstKey })"
    )
    verdicts = await page.evaluate(VERDICT_TIMINGS)
    # browser clock: from the first key to the last answer acknowledged
    work_s = (max(v["end"] for v in verdicts) - bench["first_key"]) / 1000 if verdicts else 0.0
    return {
        "operator": name,
        "keys": len(keys),
        "stalls": stalls,
        "loop_s": loop_s,
        "until_acknowledged_s": acked_s,
        "work_s": work_s,
        "areas_acknowledged": done_areas,
        "samples": bench["samples"],
        "errors": bench["errors"],
        "switches": bench["switches"],
        "verdicts": verdicts,
    }


async def run_case(
    browser: Browser, tasks: Path, db: Path, operators: int, seconds: float, think_s: float = 0.0
) -> dict[str, Any]:
    """``operators`` scripted operators at once against one fresh server."""
    with annotate_server(tasks, db, args=("--out", str(db.with_suffix(".json")))) as server:
        contexts = [
            await browser.new_context(viewport={"width": 1280, "height": 800})
            for _ in range(operators)
        ]
        pages = []
        for k, context in enumerate(contexts):
            await context.add_init_script(PROBE)
            page = await context.new_page()
            await login(page, server.url, f"op-{k}")
            pages.append(page)
        deadline = time.monotonic() + seconds
        t0 = time.monotonic()
        runs = await asyncio.gather(
            *(operate(p, f"op-{k}", 100 + k, deadline, think_s) for k, p in enumerate(pages))
        )
        wall = time.monotonic() - t0
        for context in contexts:
            await context.close()
    return summarise(runs, operators, wall)


def summarise(runs: list[dict[str, Any]], operators: int, wall_s: float) -> dict[str, Any]:
    area_ms = [s["ms"] for r in runs for s in r["samples"] if s["kind"] == "area"]
    area_dom = [s["dom"] for r in runs for s in r["samples"] if s["kind"] == "area"]
    images = [s for r in runs for s in r["samples"] if s["kind"] == "image" and not s["empty"]]
    image_ms = [s["ms"] for s in images]
    replaced = [s for r in runs for s in r["samples"] if s["kind"] == "replaced"]
    verdicts = [v for r in runs for v in r["verdicts"]]
    server_ms = [v["server"] for v in verdicts]
    per_operator = [
        {
            "operator": r["operator"],
            "areas_acknowledged": r["areas_acknowledged"],
            "keys": r["keys"],
            "stalls": r["stalls"],
            "keys_dropped": sum("went to another operator first" in e for e in r["errors"]),
            "keys_refused": sum("went to another operator first" not in e for e in r["errors"]),
            "images_switched_by_server": r["switches"],
            "seconds": round(r["work_s"], 2),
            "areas_per_min": round(60 * r["areas_acknowledged"] / r["work_s"], 1)
            if r["work_s"]
            else 0.0,
        }
        for r in runs
    ]
    rates = [o["areas_per_min"] for o in per_operator]
    out = {
        "operators": operators,
        "wall_s": round(wall_s, 2),
        "a_next_area_ms": {**_summary(area_ms), "dom_p95": _pct(area_dom, 95)},
        "b_next_image_ms": {
            **_summary(image_ms),
            "dom_p95": _pct([s["dom"] for s in images], 95),
            "not_decoded": sum(not s["ok"] for s in images),
        },
        # a key on a prefetched image another operator took first: until the page shows the
        # image the server handed out (the key is dropped)
        "replaced_image_ms": _summary([s["ms"] for s in replaced]),
        "c_verdict_server_ms": {
            "n": len(server_ms),
            "median": statistics.median(server_ms) if server_ms else None,
            "p95": _pct(server_ms, 95),
            "total_median": statistics.median([v["total"] for v in verdicts]) if verdicts else None,
        },
        "d_areas_per_min": {
            "per_operator_min": min(rates) if rates else None,
            "per_operator_median": statistics.median(rates) if rates else None,
            "all_operators": round(
                60
                * sum(o["areas_acknowledged"] for o in per_operator)
                / max(r["work_s"] for r in runs),
                1,
            ),
        },
        "per_operator": per_operator,
        "error_messages": sorted({e for r in runs for e in r["errors"]})[:10],
    }
    a, b, c, d = (
        out["a_next_area_ms"]["p95"],
        out["b_next_image_ms"]["p95"],
        out["c_verdict_server_ms"]["median"],
        out["d_areas_per_min"]["per_operator_min"],
    )
    out["pass"] = {
        "a_next_area_p95": a is not None and a <= TARGETS["area_p95_ms"],
        "b_next_image_p95": b is not None and b <= TARGETS["image_p95_ms"],
        "c_verdict_median": c is not None and c <= TARGETS["verdict_median_ms"],
        "d_areas_per_min": d is not None and d >= TARGET_AREAS_PER_MIN,
    }
    return out


def _http_operator(url: str, name: str, pace_s: float, seed: int) -> list[float]:
    """One operator over plain HTTP (no browser): a verdict every ``pace_s`` seconds until
    nothing is left; the seconds each verdict took, as the client saw them."""
    import re

    import requests

    rng = random.Random(seed)
    http = requests.Session()
    form = http.get(url + "/login", timeout=30).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    http.post(url + "/login", data={"operator": name, "csrf": csrf.group(1)}, timeout=30)
    config = re.search(r'id="config">(.*?)</script>', http.get(url + "/", timeout=30).text)
    assert config is not None
    headers = {"X-CSRF-Token": json.loads(config.group(1))["csrf"]}
    took: list[float] = []
    tick = time.monotonic()
    while True:
        res = http.post(url + "/api/next", json={}, headers=headers, timeout=30).json()
        if res["image"] is None:
            return took
        for a in res["image"]["areas"]:
            tick += pace_s
            time.sleep(max(0.0, tick - time.monotonic()))
            body = {
                "request_id": f"{name}-{len(took):06d}-{rng.getrandbits(32):08x}",
                "image_id": res["image"]["image_id"],
                "area_id": a["area_id"],
                "verdict": rng.choice(["defect", "healthy"]),
            }
            start = time.perf_counter()
            answer = http.post(url + "/api/verdict", json=body, headers=headers, timeout=30)
            took.append(time.perf_counter() - start)
            answer.raise_for_status()


def server_only(tasks: Path, db: Path, operators: int, pace_s: float) -> dict[str, Any]:
    """The verdict answer time without browsers on the machine: ``operators`` threads over
    HTTP, each at the target pace (a verdict every ``pace_s``), against a fresh server."""
    from concurrent.futures import ThreadPoolExecutor

    with annotate_server(tasks, db, args=("--out", str(db.with_suffix(".json")))) as server:
        with ThreadPoolExecutor(operators) as pool:
            runs = list(
                pool.map(
                    lambda k: _http_operator(server.url, f"http-{k}", pace_s, k),
                    range(operators),
                )
            )
    took = [1000 * t for run in runs for t in run]
    return {
        "operators": operators,
        "pace_ms": 1000 * pace_s,
        "n": len(took),
        "median_ms": statistics.median(took),
        "p95_ms": _pct(took, 95),
        "pass": statistics.median(took) <= TARGETS["verdict_median_ms"],
    }


def _rounded(value: Any) -> Any:
    """Floats to 0.01 (browser times come in 0.1 ms steps, with float noise)."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": uptime, "loadavg_1_5_15": [one, five, fifteen], "cpus": os.cpu_count()}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from mentoring.io import write_json

    load_before = _load()
    cases = {}
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
        root = Path(tmp) / "data"
        tasks, n_areas = make_tasks(root, args.images)
        async with async_playwright() as pw:
            launch_args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=launch_args
            )
            try:
                version = browser.version
                for operators in args.operators:
                    db = root / f"annotate/bench-{operators}.sqlite"
                    print(f"{operators} operator(s) ...", flush=True)
                    case = await run_case(
                        browser, tasks, db, operators, args.seconds, args.think_ms / 1000
                    )
                    cases[str(operators)] = case
                    print(json.dumps({k: case[k] for k in list(case)[:6]}, indent=1), flush=True)
            finally:
                await browser.close()
        print(f"{max(args.operators)} operators over HTTP only ...", flush=True)
        http_only = server_only(
            tasks,
            root / "annotate/bench-http.sqlite",
            max(args.operators),
            60 / TARGET_AREAS_PER_MIN,
        )
        print(json.dumps(http_only), flush=True)
    from importlib.metadata import version as pkg_version

    met = all(all(c["pass"].values()) for c in cases.values())
    result = {
        "benchmark": "annotate",
        "all_targets_met": met,
        "targets": {
            "a_next_area_p95_ms": TARGETS["area_p95_ms"],
            "b_next_image_p95_ms": TARGETS["image_p95_ms"],
            "c_verdict_median_ms": TARGETS["verdict_median_ms"],
            "d_areas_per_min_min": TARGET_AREAS_PER_MIN,
        },
        "task_set": {
            "images": args.images,
            "areas": n_areas,
            "image_px": 128,
            "classes": len(CLASSES),
        },
        "cases": cases,
        "c_verdict_http_only": http_only,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "chromium": version,
            "playwright": pkg_version("playwright"),
            "load_before": load_before,
            "load_after": _load(),
        },
    }
    write_json(args.out, _rounded(result))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="images in the task set")
    ap.add_argument("--operators", type=int, nargs="+", default=[1, 4], help="cases to run")
    ap.add_argument("--seconds", type=float, default=120.0, help="most seconds per case")
    ap.add_argument("--think-ms", type=float, default=0.0, help="pause before each key")
    ap.add_argument("--quick", action="store_true", help="40 images: a smoke run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "annotate.json")
    args = ap.parse_args()
    if args.quick:
        args.images = 40
    reason = chromium_missing()
    if reason is not None:
        sys.exit(f"benchmarks/annotate.py: {reason}")
    result = asyncio.run(amain(args))
    print(f"wrote {args.out}; all targets met: {result['all_targets_met']}")


if __name__ == "__main__":
    main()
