"""The dashboard (``GET /ui``) in a real browser against a real stack.

Real Redis, a real ``scalejob api`` (uvicorn) process, real ``scalejob worker`` processes or the
real autoscaler, and Debian's Chromium driven by Playwright (no browser download). Without
``/usr/bin/chromium`` or the ``playwright`` package the browser tests skip and say why.
Screenshots of each page go to a temp dir; ``docs/make_screenshots.py`` runs these tests with
``SCALEJOB_SCREENSHOT_DIR=docs/img`` to refresh the docs' images (a test run never writes tracked files).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apiserver import ADMIN_TOKEN, ApiServer, api  # noqa: F401 - fixture
from tests.autoscaling import Autoscalers, autoscalers  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]
IMG = Path(os.environ.get("SCALEJOB_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="scalejob-screenshots-"))
COUNTING = "for i in 1 2 3 4; do echo \"step $i progress: $((i*25))%\"; sleep 0.4; done"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (install it with: apt-get install -y chromium)"
        print(reason)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
        print(reason)
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Tab:
    """One browser tab on the dashboard; records console errors (a CSP violation is one)."""

    def __init__(self, browser: Any, base: str) -> None:
        self.ctx = browser.new_context(viewport={"width": 1360, "height": 1000})
        self.page = self.ctx.new_page()
        self.base = base
        self.errors: list[str] = []  # console errors (a 401 response is one, on purpose)
        self.crashes: list[str] = []  # uncaught exceptions in the page's scripts
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.crashes.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())  # the cancel button's confirm()

    def open(self, hash_: str = "") -> None:
        self.page.goto(f"{self.base}/ui{hash_}")

    def login(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.click("#login-form button")

    def shot(self, name: str) -> None:
        IMG.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(IMG / f"dashboard-{name}.png"), full_page=True)

    def close(self) -> None:
        assert not [e for e in self.errors if "Content Security Policy" in e], self.errors
        assert not self.crashes, self.crashes
        self.ctx.close()


@pytest.fixture
def tab(browser: Any, api: ApiServer) -> Iterator[Tab]:  # noqa: F811
    t = Tab(browser, api.url)
    yield t
    t.close()


def _service(stack: Stack, **autoscaler: Any) -> Any:
    spec = {"metadata": {"name": stack.service_name("ui")}}
    if autoscaler:
        spec["autoscaler"] = autoscaler
    return stack.deploy(spec)


@contextlib.contextmanager
def kept_alive(stack: Stack, names: list[str]) -> Iterator[None]:
    """Heartbeat registry entries (as live workers would) while the block runs."""
    from app.queue import workers as registry

    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            for n in names:
                registry.heartbeat(stack.r, n)
            stop.wait(1)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()


# --- auth ----------------------------------------------------------------------------------------
def test_page_without_token_shows_login_and_no_data_and_a_wrong_token_is_refused(stack: Stack, api: ApiServer, tab: Tab) -> None:  # noqa: F811
    spec = _service(stack)
    page = httpx.get(f"{api.url}/ui")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert spec.name not in page.text
    assert httpx.get(f"{api.url}/api/ui/session").status_code == 401
    assert httpx.get(f"{api.url}/api/services/{spec.name}/history").status_code == 401

    tab.open()
    assert tab.page.is_visible("#login") and not tab.page.is_visible("#main")
    assert spec.name not in tab.page.content()
    tab.shot("login")

    tab.login("not-the-token")
    tab.page.wait_for_selector("#login-error:has-text('Token refused')")
    assert not tab.page.is_visible("#main") and spec.name not in tab.page.inner_text("body")
    assert tab.page.evaluate("sessionStorage.length") == 0 and tab.page.context.cookies() == []

    tab.login(ADMIN_TOKEN)
    tab.page.wait_for_selector(f"#services tr[data-service='{spec.name}']")
    assert tab.page.evaluate("sessionStorage.getItem('scalejob.token')") == ADMIN_TOKEN
    assert ADMIN_TOKEN not in tab.page.url and tab.page.context.cookies() == []
    tab.page.click("#logout")
    tab.page.wait_for_selector("#login", state="visible")
    assert spec.name not in tab.page.inner_text("body")


def test_a_service_token_sees_only_its_service(stack: Stack, api: ApiServer, tab: Tab) -> None:  # noqa: F811
    mine = stack.deploy({"metadata": {"name": stack.service_name("mine"), "token": "mine-token-123"}})
    other = _service(stack)
    with api.client("mine-token-123") as c:
        assert c.get("/api/ui/session").json() == {"admin": False, "services": [mine.name], "tenant": None}
        assert c.get(f"/api/services/{other.name}/requests").status_code == 404
        overview = c.get(f"/api/services/{mine.name}/overview").json()
        assert overview["spec"]["metadata"]["token"] == "***" and "mine-token-123" not in json.dumps(overview)

    tab.open()
    tab.login("mine-token-123")
    tab.page.wait_for_selector(f"#services tr[data-service='{mine.name}']")
    assert other.name not in tab.page.inner_text("#services")
    assert "mine-token-123" not in tab.page.content()


# --- chart data ----------------------------------------------------------------------------------
def _decision(at: float, desired: int, rule: str, workers: int, waiting: int, actions: list[str]) -> dict[str, Any]:
    return {"at": at, "service": "x", "inputs": {"waiting": waiting, "running": 0, "workers": {"idle": workers}, "free_gpus": None},
            "desired": desired, "standby": 0, "reason": f"{rule} to {desired}", "rule": rule, "actions": actions, "duration_ms": 1.0}


def test_history_turns_decisions_into_chart_points_and_scale_events(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    from app.queue import decisions as history

    spec = _service(stack)
    now = time.time()
    seeded = [
        _decision(now - 7200, 1, "hold", 1, 0, []),  # older than the hour: left out
        _decision(now - 120, 3, "scale-up", 1, 5, ["spawn a", "spawn b"]),
        _decision(now - 110, 3, "scale-up", 3, 2, []),  # same decision: folded into the previous entry
        _decision(now - 60, 1, "scale-down", 3, 0, ["drain a (idle)", "drain b (idle)"]),
        _decision(now - 30, 1, "scale-down", 1, 0, []),
    ]
    for entry in seeded:
        history.record(stack.r, spec.name, entry, 200)
    with api.client() as c:
        hist = c.get(f"/api/services/{spec.name}/history").json()
    times = [p["t"] for p in hist["points"]]
    assert times == sorted(times) and times[0] >= now - 3600
    assert [round(p["t"] - now) for p in hist["points"]] == [-120, -110, -60, -30]
    # real samples: the values of each tick, not the latest inputs of a folded entry
    assert [p["workers"] for p in hist["points"]] == [1, 3, 3, 1] and [p["waiting"] for p in hist["points"]] == [5, 2, 0, 0]
    assert max(p["desired"] for p in hist["points"]) == 3
    assert [(round(e["t"] - now), e["rule"]) for e in hist["events"]] == [(-120, "scale-up"), (-60, "scale-down")]
    assert hist["events"][1]["actions"] == ["drain a (idle)", "drain b (idle)"] and hist["events"][0]["reason"] == "scale-up to 3"


def test_chart_plots_each_changed_tick_of_a_repeated_decision_and_a_sample_every_few_seconds(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    """The issue's case: one unchanged decision while waiting went 9 -> 6 -> 3 must not draw 4 (or 3) for all of it."""
    from app.queue import decisions as history

    spec = _service(stack)
    now = time.time()
    for i, waiting in enumerate([9, 9, 6, 6, 3]):
        history.record(stack.r, spec.name, _decision(now - 20 + i, 2, "hold", 2, waiting, []), 200)
    for k in range(1, 25):  # 12 s of identical ticks every 0.5 s
        history.record(stack.r, spec.name, _decision(now - 15 + k * 0.5, 2, "hold", 2, 3, []), 200)
    with api.client() as c:
        hist = c.get(f"/api/services/{spec.name}/history").json()
    waits = [(round(p["t"] - now, 1), p["waiting"]) for p in hist["points"]]
    assert waits[:3] == [(-20.0, 9), (-18.0, 6), (-16.0, 3)], waits
    quiet = [t for t, _ in waits[3:]]
    assert 2 <= len(quiet) <= 3 and all(b - a >= 5.0 for a, b in zip([-16.0, *quiet], quiet, strict=False)), waits  # at least every 5 s, not every tick
    assert len(stack.r.lrange(f"{stack.prefix}:{spec.name}:decisions", 0, -1)) == 1  # the decision list still folds


def test_service_page_shows_type_front_end_and_a_red_crash_loop_banner(stack: Stack, api: ApiServer, autoscalers: Autoscalers, tab: Tab) -> None:  # noqa: F811
    from app.queue import health

    spec = stack.deploy({"containers": [{"init_commands": ["echo cannot find weights; exit 7"]}], "metadata": {"name": stack.service_name("badinit")},
                         "autoscaler": {"min": 0, "max": 1}})
    autoscalers.wait_leader(autoscalers.start())
    stack.put(spec, "command", "echo never runs")
    wait_for(lambda: health.get(stack.r, spec.name).failures >= 2, 60, what="two failed starts")
    tab.open()
    tab.login(ADMIN_TOKEN)
    tab.page.wait_for_selector(f"#services tr[data-service='{spec.name}']")
    tab.page.goto(f"{api.url}/ui#/service/{spec.name}")
    tab.page.wait_for_selector("#service-banner:not([hidden])")
    banner = tab.page.inner_text("#service-banner")
    assert "Crash-loop backoff" in banner and "exit 7" in banner, banner
    facts = tab.page.inner_text("#service-facts")
    assert "type ScalableJob" in facts and "health crash_loop_backoff" in facts and "no front end" in facts, facts
    assert tab.page.evaluate("getComputedStyle(document.getElementById('service-banner')).color") == "rgb(153, 27, 27)"
    tab.shot("service-crash-loop")


# --- live table feed -----------------------------------------------------------------------------
def test_live_feed_sends_a_snapshot_then_only_changed_rows(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    quiet, busy = _service(stack), _service(stack)
    events: list[tuple[str, dict[str, Any], float]] = []
    with api.client() as c, c.stream("GET", "/api/ui/stream") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind or "", json.loads(line[6:]), time.monotonic()))
                if len(events) == 1:
                    stack.put(busy, "command", "echo hi")  # no worker: it waits
                if any(k == "delta" and busy.name in d["rows"] for k, d, _ in events):
                    break
    snapshot = events[0]
    assert snapshot[0] == "snapshot" and {quiet.name, busy.name} <= set(snapshot[1]["rows"])
    deltas = [d for k, d, _ in events[1:] if k == "delta"]
    assert deltas and all(quiet.name not in d["rows"] for d in deltas)
    assert deltas[-1]["rows"][busy.name]["waiting"] == 1
    assert "token" not in json.dumps(snapshot[1])
    gaps = [b[2] - a[2] for a, b in zip(events, events[1:], strict=False)]
    assert all(g > 0.8 for g in gaps), gaps  # at most about once per second


# --- scale: 1,000 waiting requests and 50 workers -----------------------------------------------
def test_pages_stay_fast_at_1000_waiting_requests_and_50_workers(stack: Stack, api: ApiServer, tab: Tab) -> None:  # noqa: F811
    from app.queue import put as inqueue
    from app.queue import workers as registry

    spec = _service(stack)
    for i in range(1000):
        inqueue.put(stack.r, spec, "command", f"echo {i}".encode())
    names = [f"{spec.name}-w{i:02d}" for i in range(50)]
    for n in names:
        registry.register(stack.r, n, spec.name, "idle")
    with kept_alive(stack, names):
        with api.client() as c:
            timings = {}
            for path in ("requests?limit=25", "requests?offset=975&limit=25", "workers?limit=25", "history", "overview"):
                t0 = time.perf_counter()
                resp = c.get(f"/api/services/{spec.name}/{path}")
                timings[path] = time.perf_counter() - t0
                assert resp.status_code == 200, resp.text
            page = c.get(f"/api/services/{spec.name}/requests", params={"offset": 975, "limit": 25}).json()
            assert page["total"] == 1000 and len(page["requests"]) == 25
            assert c.get(f"/api/services/{spec.name}/workers", params={"limit": 25}).json()["total"] == 50
        print("dashboard API at 1000 waiting / 50 workers (s):", {k: round(v, 4) for k, v in timings.items()})
        assert max(timings.values()) < 2.0, timings

        tab.open()
        tab.login(ADMIN_TOKEN)
        row = tab.page.wait_for_selector(f"#services tr[data-service='{spec.name}']")
        assert row.inner_text().split("\t")[1:2] == ["1000"]
        tab.page.click(f"a[href='#/service/{spec.name}']")
        tab.page.wait_for_selector("#requests-box .pager:has-text('1–25 of 1000')")
        tab.page.wait_for_selector("#workers-box .pager:has-text('1–25 of 50')")
        assert tab.page.locator("#requests tbody tr").count() == 25 and tab.page.locator("#workers tbody tr").count() == 25
        assert tab.page.locator("#workers tbody tr").first.inner_text().count("no GPU") == 1


# --- workers and GPUs ----------------------------------------------------------------------------
@pytest.fixture
def inprocess_api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API served from this process (uvicorn in a thread), so a fake NVML can be injected."""
    import uvicorn

    from tests.conftest import reset_caches
    from tests.helpers import free_port

    monkeypatch.setenv("SCALEJOB_ADMIN_TOKEN", ADMIN_TOKEN)
    reset_caches()
    server = uvicorn.Server(uvicorn.Config("app.api:app", host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, what="in-process API to start")
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_workers_show_their_gpu_device_util_and_memory_or_no_gpu(stack: Stack, inprocess_api: str, browser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.gpu import GpuMonitor
    from app.queue import workers as registry
    from app.ui import data as ui_data
    from tests.fake_nvml import FakeNvml, GiB

    nvml = FakeNvml(2)
    nvml.devices[1].util, nvml.devices[1].mem_used = 73.0, 20 * GiB
    monkeypatch.setattr(ui_data, "gpus", ui_data.DashboardGpus(lambda: GpuMonitor(nvml)))
    spec = _service(stack)
    gpu, cpu = f"{spec.name}-gpu", f"{spec.name}-cpu"
    registry.register(stack.r, gpu, spec.name, "idle", gpus="1")
    registry.register(stack.r, cpu, spec.name, "idle")
    tab = Tab(browser, inprocess_api)
    with kept_alive(stack, [gpu, cpu]):
        page = ui_data.workers_page(stack.r, spec.name)
        by_name = {w["name"]: w for w in page["workers"]}
        assert page["gpu_available"] and by_name[cpu]["gpus"] == []
        assert by_name[gpu]["gpus"] == [{"index": 1, "util": 73.0, "mem_used": 20 * GiB, "mem_total": 80 * GiB, "healthy": True}]

        tab.open(f"#/service/{spec.name}")
        tab.login(ADMIN_TOKEN)
        row = tab.page.wait_for_selector(f"#workers tr[data-worker='{gpu}']")
        assert "GPU 1: 73% · 20.0/80.0 GiB" in row.inner_text()
        assert "no GPU" in tab.page.inner_text(f"#workers tr[data-worker='{cpu}']")
        tab.page.locator("section.card", has=tab.page.locator("#workers-box")).screenshot(path=str(IMG / "dashboard-workers.png"))
    tab.close()


def submit_counting_task_and_watch_it_finish(tab: Tab, service: str) -> None:
    """From the services page: open the service, submit COUNTING from the form, and wait on
    its request page until the progress bar is at 100 %, the last log line is in and it succeeded."""
    tab.page.click(f"a[href='#/service/{service}']")
    tab.page.wait_for_selector("#submit-form")
    tab.page.select_option("#task-type", "command")
    tab.page.fill("#payload", COUNTING)
    tab.page.click("#submit-form button")
    tab.page.wait_for_url("**/ui#/request/*")
    tab.page.wait_for_selector("#request-progress [role=progressbar][aria-valuenow='100']", timeout=60_000)
    tab.page.wait_for_selector("#log:has-text('step 4 progress: 100%')", timeout=30_000)
    tab.page.wait_for_selector("#request-head [data-stat=state] b:text-is('succeeded')", timeout=30_000)


# --- a task's life from the form -----------------------------------------------------------------
def test_submit_from_the_form_streams_progress_and_logs_and_cancel_stops_a_long_task(stack: Stack, api: ApiServer, tab: Tab) -> None:  # noqa: F811
    spec = _service(stack)
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle", timeout=60)

    tab.open()
    tab.login(ADMIN_TOKEN)
    tab.page.wait_for_selector(f"#services tr[data-service='{spec.name}'] td:nth-child(5):text-is('1')")  # 1 idle
    submit_counting_task_and_watch_it_finish(tab, spec.name)
    assert "step 1 progress: 25%" in tab.page.inner_text("#log")
    assert tab.page.is_disabled("#cancel")
    tab.shot("request")

    tab.page.goto(f"{api.url}/ui#/service/{spec.name}")
    tab.page.fill("#payload", "echo long-task-started; sleep 120")
    tab.page.click("#submit-form button")
    tab.page.wait_for_url("**/ui#/request/*")
    long_id = tab.page.url.rsplit("/", 1)[1]
    tab.page.wait_for_selector("#log:has-text('long-task-started')", timeout=60_000)
    tab.page.click("#cancel")
    tab.page.wait_for_selector("#request-head [data-stat=state] b:text-is('cancelled')", timeout=60_000)
    assert stack.record(long_id).state == "cancelled"

    tab.page.goto(f"{api.url}/ui#/service/{spec.name}")
    tab.page.wait_for_selector(f"#requests tr[data-request='{long_id}'][data-state=cancelled]")
    tab.page.wait_for_selector("#requests tr[data-state=succeeded] [aria-valuenow='100']")
    tab.page.wait_for_selector("#workers tbody tr td:has-text('no GPU')")


# --- the chart after a burst ---------------------------------------------------------------------
def test_chart_shows_workers_rise_and_fall_after_a_burst(stack: Stack, api: ApiServer, autoscalers: Autoscalers, tab: Tab) -> None:  # noqa: F811
    spec = _service(stack, min=1, max=3, strategies={"avg_waiting_length": 1}, behavior={"scaleDown": {"stabilizationWindowSeconds": 2}})
    autoscalers.wait_leader(autoscalers.start())
    stack.wait_workers(spec.name, 1, "idle", timeout=90)
    ids = [stack.put(spec, "command", "sleep 4") for _ in range(4)]
    wait_for(lambda: len(stack.workers(spec.name)) >= 2, 90, what="the autoscaler to add workers")
    for rid in ids:
        stack.wait_done(rid, timeout=120)
    wait_for(lambda: len(stack.workers(spec.name)) == 1, 90, what="the pool to shrink back to 1")

    tab.open()
    tab.login(ADMIN_TOKEN)
    tab.page.wait_for_selector(f"#services tr[data-service='{spec.name}'] td.reason:not(:text-is('no decision yet'))")
    tab.shot("services")
    tab.page.goto(f"{api.url}/ui#/service/{spec.name}")
    # page.evaluate, not wait_for_function: the page's CSP (no 'unsafe-eval') blocks the latter
    wait_for(lambda: tab.page.evaluate("window.sjChart ? window.sjChart.data[0].length : 0") > 2, 30, what="chart data")
    workers = tab.page.evaluate("window.sjChart.data[3]")
    assert max(workers) >= 2, workers
    wait_for(lambda: tab.page.evaluate("window.sjChart.data[3].slice(-1)[0]") == 1, 30, what="the chart's worker line back at 1")
    events = tab.page.evaluate("window.sjChart.events")
    assert any("spawn" in " ".join(e["actions"]) for e in events) and any("drain" in " ".join(e["actions"]) for e in events), events
    box = tab.page.locator("#chart .u-over").bounding_box()
    tab.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    assert tab.page.inner_text("#chart-reason").strip()
    tab.shot("service")


# --- the same page on a real `scalejob up` -------------------------------------------------------
def test_the_dashboard_of_a_real_scalejob_up(browser: Any, tmp_path: Path) -> None:
    """`scalejob up` as a user runs it: log in, submit from the form, watch it finish, see the
    autoscaler bring a worker up from zero and take it away again on the chart."""
    from tests.test_up import clean_env, start_up

    name = f"upui-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "svc.json"
    spec.write_text(json.dumps({
        "metadata": {"name": name},
        "autoscaler": {"min": 0, "max": 2, "behavior": {"onZero": {"scaleDownGracePeriodSeconds": 2}}},
    }))
    up, port = start_up(tmp_path, clean_env(SCALEJOB_ADMIN_TOKEN=ADMIN_TOKEN), str(spec))  # embedded Redis
    tab = Tab(browser, f"http://127.0.0.1:{port}")
    try:
        tab.open()
        tab.login(ADMIN_TOKEN)
        tab.page.wait_for_selector(f"#services tr[data-service='{name}']")
        submit_counting_task_and_watch_it_finish(tab, name)
        tab.page.goto(f"http://127.0.0.1:{port}/ui#/service/{name}")
        wait_for(lambda: tab.page.evaluate("window.sjChart ? window.sjChart.data[3].length : 0") > 2, 60, what="chart data")
        wait_for(lambda: max(tab.page.evaluate("window.sjChart.data[3]")) >= 1, 60, what="a worker on the chart")
        wait_for(lambda: tab.page.evaluate("window.sjChart.data[3].slice(-1)[0]") == 0, 60, what="the worker line back at 0")
        tab.close()
    finally:
        up.signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0, up.output()[-3000:]
