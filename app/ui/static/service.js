/* scalejob dashboard: one service — live numbers, the last hour's chart, spec and autoscaler
 * config, workers, recent requests and a form to submit a task. */
"use strict";

(function () {
  const { h } = SJ;
  const SERIES = [
    { label: "waiting", stroke: "#d97706" },
    { label: "running", stroke: "#2563eb" },
    { label: "workers", stroke: "#059669", width: 2 },
    { label: "desired", stroke: "#7c3aed", dash: [6, 4] },
  ];
  const PAGE = 25;

  /* --- chart: decision history + live points from the table feed -------------------------- */
  function makeChart(box, reasonEl, hist) {
    const data = [[], [], [], [], []];
    const reasons = [];
    const push = (p) => {
      const ts = data[0];
      if (ts.length && p.t <= ts[ts.length - 1]) return;
      data[0].push(p.t); data[1].push(p.waiting ?? null); data[2].push(p.running);
      data[3].push(p.workers); data[4].push(p.desired ?? null);
      reasons.push(p.reason || "");
    };
    hist.points.forEach(push);
    const events = hist.events;
    const markEvents = (u) => {
      const { ctx, bbox } = u;
      ctx.save();
      ctx.strokeStyle = "rgba(220, 38, 38, 0.55)";
      ctx.fillStyle = "rgba(220, 38, 38, 0.9)";
      ctx.setLineDash([3, 3]);
      for (const ev of events) {
        const x = Math.round(u.valToPos(ev.t, "x", true));
        if (x < bbox.left || x > bbox.left + bbox.width) continue;
        ctx.beginPath(); ctx.moveTo(x, bbox.top); ctx.lineTo(x, bbox.top + bbox.height); ctx.stroke();
        ctx.beginPath(); ctx.arc(x, bbox.top + 4, 4, 0, 2 * Math.PI); ctx.fill();
      }
      ctx.restore();
    };
    const explain = (u) => {
      const i = u.cursor.idx;
      if (i === null || i === undefined) { reasonEl.textContent = "Hover the chart for the autoscaler's reasons; red marks are scale events."; return; }
      const t = data[0][i];
      const near = events.filter((e) => Math.abs(u.valToPos(e.t, "x") - u.valToPos(t, "x")) < 8);
      const ev = near.length ? near[near.length - 1] : null;
      reasonEl.textContent = ev
        ? `${SJ.fmtTime(ev.t)} scale event (${ev.rule}): ${ev.reason} → ${ev.actions.join("; ")}`
        : `${SJ.fmtTime(t)}: ${reasons[i] || "live sample"}`;
    };
    const width = Math.max(320, box.clientWidth - 8);
    const u = new uPlot({
      width, height: 260,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(2, max + 1)] } },
      axes: [{}, { label: "count" }],
      series: [{}, ...SERIES.map((s) => ({ ...s, points: { show: false }, paths: uPlot.paths.stepped({ align: 1 }) }))],
      hooks: { draw: [markEvents], setCursor: [explain] },
    }, data, box);
    explain(u);
    new ResizeObserver(() => u.setSize({ width: Math.max(320, box.clientWidth - 8), height: 260 })).observe(box);
    const chart = { u, data, events, push: (p) => { push(p); u.setData(data); } };
    window.sjChart = chart; // read by the browser test; holds no secret
    return chart;
  }

  function livePoint(row) {
    const w = row.workers || {};
    return { t: Date.now() / 1000, waiting: row.waiting, running: row.running,
      workers: (w.starting || 0) + (w.idle || 0) + (w.busy || 0) + (w.draining || 0), desired: row.desired, reason: row.reason };
  }

  /* --- workers and requests tables (paged) -------------------------------------------------- */
  function pager(state, total, reload) {
    const from = total ? state.offset + 1 : 0;
    const to = Math.min(state.offset + PAGE, total);
    return h("div", { class: "pager" },
      h("button", { type: "button", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - PAGE); reload(); } }, "‹ newer"),
      h("span", { text: `${from}–${to} of ${total}` }),
      h("button", { type: "button", disabled: to >= total, onclick: () => { state.offset += PAGE; reload(); } }, "older ›"));
  }

  function gpuCell(w, gpuAvailable) {
    if (!gpuAvailable || !w.gpus.length) return h("td", { class: "muted", text: "no GPU" });
    return h("td", {}, w.gpus.map((g) => h("div", {
      text: `GPU ${g.index}: ${Math.round(g.util)}% · ${(g.mem_used / 2 ** 30).toFixed(1)}/${(g.mem_total / 2 ** 30).toFixed(1)} GiB${g.healthy ? "" : " · unhealthy"}`,
    })));
  }

  function workersTable(page) {
    return h("table", { class: "grid", id: "workers" },
      h("thead", {}, h("tr", {}, ["name", "host", "pid", "state", "current request", "for", "GPU"].map((c) => h("th", { text: c })))),
      h("tbody", {}, page.workers.map((w) => h("tr", { dataset: { worker: w.name } },
        h("td", { text: w.name }), h("td", { text: w.host }), h("td", { class: "num", text: w.pid }),
        h("td", {}, h("span", { class: `pill ${w.state}`, text: w.state })),
        h("td", {}, w.running.length ? w.running.map((x) => x.id ? h("a", { href: `#/request/${encodeURIComponent(x.id)}`, text: x.id.slice(0, 12) }) : h("span", { text: "another tenant's" })) : "–"),
        h("td", { text: w.running.length ? w.running.map((x) => SJ.fmtAge(x.for_s)).join(", ") : "–" }),
        gpuCell(w, page.gpu_available)))));
  }

  function requestsTable(page) {
    return h("table", { class: "grid", id: "requests" },
      h("thead", {}, h("tr", {}, ["request", "type", "state", "tenant", "progress", "queued", "duration"].map((c) => h("th", { text: c })))),
      h("tbody", {}, page.requests.map((q) => h("tr", { dataset: { request: q.id, state: q.state } },
        h("td", {}, h("a", { href: `#/request/${encodeURIComponent(q.id)}`, text: q.id.slice(0, 12) })),
        h("td", { text: q.task_type }),
        h("td", {}, h("span", { class: `pill ${q.state}`, text: q.cancel_requested && q.state === "running" ? "cancelling" : q.state })),
        h("td", { text: q.tenant }),
        h("td", {}, SJ.progressBar(q.progress, q.state)),
        h("td", { text: SJ.fmtTime(q.queued_at) }),
        h("td", { class: "num", text: q.duration_s === null ? "–" : SJ.fmtAge(q.duration_s) })))));
  }

  /* --- submit form ------------------------------------------------------------------------- */
  function submitForm(name, taskTypes) {
    const type = h("select", { id: "task-type", name: "taskType" }, taskTypes.map((t) => h("option", { value: t, text: t })));
    const payload = h("textarea", { id: "payload", name: "payload", rows: 3, spellcheck: "false",
      placeholder: "command: a shell command line, e.g.  for i in 1 2 3 4; do echo progress: $((i*25))%; sleep 1; done" });
    const out = h("p", { class: "form-out", role: "status" });
    const form = h("form", { id: "submit-form", class: "submit", autocomplete: "off" },
      h("label", { for: "task-type", text: "taskType" }), type,
      h("label", { for: "payload", text: "payload" }), payload,
      h("button", { type: "submit", text: "Submit task" }), out);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      out.textContent = "submitting…";
      try {
        const res = await SJ.api(`/api/predict/${encodeURIComponent(name)}?taskType=${encodeURIComponent(type.value)}`,
          { method: "POST", body: payload.value, headers: { "Content-Type": "application/octet-stream" } });
        out.textContent = `accepted as request ${res.request_id} (index ${res.index})`;
        location.hash = `#/request/${encodeURIComponent(res.request_id)}`;
      } catch (e) {
        out.textContent = `refused: ${e.message}`;
      }
    });
    return form;
  }

  /* --- the view ---------------------------------------------------------------------------- */
  SJ.views.service = async function (main, signal, name) {
    SJ.crumbs([[name, null]]);
    const live = h("div", { class: "stats", id: "service-live" });
    const banner = h("div", { id: "service-banner", class: "banner", hidden: true });
    const facts = h("p", { id: "service-facts", class: "muted" });
    const chartBox = h("div", { id: "chart", class: "chart" });
    const reasonEl = h("p", { id: "chart-reason", class: "reason-line" });
    const specPre = h("pre", { id: "spec", class: "json" });
    const cfgPre = h("pre", { id: "autoscaler", class: "json" });
    const workersBox = h("div", { id: "workers-box" });
    const requestsBox = h("div", { id: "requests-box" });
    const formBox = h("div");
    main.append(
      h("section", { class: "card" }, h("h2", { text: name }), banner, facts, live),
      h("section", { class: "card" }, h("h3", { text: "Last hour: waiting, running, workers, desired" }), chartBox, reasonEl),
      h("section", { class: "card" }, h("h3", { text: "Try it: submit a task" }), formBox),
      h("section", { class: "card" }, h("h3", { text: "Workers" }), workersBox),
      h("section", { class: "card" }, h("h3", { text: "Recent requests" }), requestsBox),
      h("section", { class: "card two" },
        h("div", {}, h("h3", { text: "Spec (read-only)" }), specPre),
        h("div", {}, h("h3", { text: "Autoscaler config" }), cfgPre)));

    let detail;
    try {
      detail = await SJ.api(`/api/services/${encodeURIComponent(name)}/overview`, { signal });
    } catch (e) {
      main.replaceChildren(h("section", { class: "card" }, h("p", { class: "error", text: e.message })));
      return;
    }
    specPre.textContent = JSON.stringify(detail.spec, null, 2);
    cfgPre.textContent = JSON.stringify(detail.autoscaler, null, 2);
    formBox.append(submitForm(name, detail.task_types));

    const showLive = (row) => {
      const w = row.workers || {};
      // a service in crash-loop backoff (or whose front end keeps exiting) says so in red, with the cause
      const feFailing = row.front_end && row.front_end.state === "backoff" ? `Front end restarting: ${row.front_end.reason || "exited"}` : "";
      const alarm = [row.failing, feFailing].filter(Boolean).join(" · ");
      banner.hidden = !alarm;
      banner.textContent = alarm;
      const fe = row.front_end ? `front end ${row.front_end.state}${row.front_end.restarts ? ` (${row.front_end.restarts} restarts)` : ""}` : "no front end";
      facts.textContent = `type ${row.type || "ScalableJob"} · health ${row.health || "ok"} · ${fe}`;
      live.replaceChildren(...[
        ["waiting", row.waiting], ["running", row.running], ["starting", w.starting || 0], ["idle", w.idle || 0],
        ["busy", w.busy || 0], ["draining", w.draining || 0], ["desired", row.desired ?? "–"], ["min–max", `${row.min}–${row.max}`],
      ].map(([k, v]) => h("div", { class: "stat", dataset: { stat: k } }, h("b", { text: v ?? "–" }), h("span", { text: k }))),
      h("p", { class: "reason-line", text: row.reason ? `last decision (${row.rule}): ${row.reason}` : "no autoscaler decision yet" }));
    };
    showLive(SJ.rows[name] || detail.row);

    const hist = await SJ.api(`/api/services/${encodeURIComponent(name)}/history`, { signal });
    if (signal.aborted) return;
    const chart = makeChart(chartBox, reasonEl, hist);
    SJ.onRows((names) => {
      if (!names.includes(name) || !SJ.rows[name]) return;
      showLive(SJ.rows[name]);
      chart.push(livePoint(SJ.rows[name]));
    }, signal);
    SJ.every(10000, async () => { // new scale events arrive with the decision history
      const fresh = await SJ.api(`/api/services/${encodeURIComponent(name)}/history?seconds=60`, { signal });
      const known = new Set(chart.events.map((e) => e.t));
      for (const ev of fresh.events) if (!known.has(ev.t)) chart.events.push(ev);
      chart.u.redraw(false);
    }, signal);

    const wState = { offset: 0 }, rState = { offset: 0 };
    const loadWorkers = async () => {
      const page = await SJ.api(`/api/services/${encodeURIComponent(name)}/workers?offset=${wState.offset}&limit=${PAGE}`, { signal });
      workersBox.replaceChildren(page.total ? workersTable(page) : h("p", { class: "muted", text: "No live workers." }),
        page.total > PAGE ? pager(wState, page.total, loadWorkers) : "");
    };
    const loadRequests = async () => {
      const page = await SJ.api(`/api/services/${encodeURIComponent(name)}/requests?offset=${rState.offset}&limit=${PAGE}`, { signal });
      requestsBox.replaceChildren(page.total ? requestsTable(page) : h("p", { class: "muted", text: "No requests yet." }),
        pager(rState, page.total, loadRequests));
    };
    SJ.every(2000, loadWorkers, signal);
    SJ.every(2000, loadRequests, signal);
  };
})();
