/* scalejob dashboard: one request — state, progress and log lines live over SSE, and cancel. */
"use strict";

(function () {
  const { h } = SJ;
  const MAX_LINES = 2000;
  const TERMINAL = ["succeeded", "failed", "cancelled"];

  SJ.views.request = async function (main, signal, id) {
    const head = h("div", { class: "stats", id: "request-head" });
    const barBox = h("div", { id: "request-progress" });
    const logEl = h("pre", { id: "log", class: "log", "aria-live": "polite" });
    const resultEl = h("pre", { id: "result", class: "json" });
    const cancelBtn = h("button", { id: "cancel", type: "button", class: "danger", text: "Cancel request" });
    const note = h("p", { class: "reason-line", id: "request-note" });
    main.append(
      h("section", { class: "card" }, h("h2", { text: `Request ${id}` }), head, barBox, h("div", { class: "actions" }, cancelBtn), note),
      h("section", { class: "card" }, h("h3", { text: "Log (live)" }), logEl),
      h("section", { class: "card" }, h("h3", { text: "Result" }), resultEl));

    let rec = null;
    const paint = () => {
      if (!rec) return;
      SJ.crumbs([[rec.service, `#/service/${encodeURIComponent(rec.service)}`], [id.slice(0, 12), null]]);
      const end = rec.finished_at || (rec.started_at ? Date.now() / 1000 : null);
      head.replaceChildren(...[
        ["state", rec.cancel_requested && rec.state === "running" ? "cancelling" : rec.state], ["type", rec.task_type],
        ["tenant", rec.tenant], ["worker", rec.worker || "–"], ["queued", SJ.fmtTime(rec.queued_at)],
        ["duration", rec.started_at && end ? SJ.fmtAge(end - rec.started_at) : "–"],
        ["position", rec.position ?? "–"], ["attempts", rec.attempts],
      ].map(([k, v]) => h("div", { class: "stat", dataset: { stat: k } }, h("b", { text: v }), h("span", { text: k }))));
      barBox.replaceChildren(SJ.progressBar(rec.progress, rec.state));
      cancelBtn.disabled = TERMINAL.includes(rec.state);
      if (rec.result !== null && rec.result !== undefined) resultEl.textContent = JSON.stringify(readable(rec.result), null, 2);
      else if (rec.error) resultEl.textContent = rec.error;
    };
    const reload = async () => { rec = await SJ.api(`/api/requests/${encodeURIComponent(id)}`, { signal }); paint(); };

    try { await reload(); } catch (e) {
      main.replaceChildren(h("section", { class: "card" }, h("p", { class: "error", text: e.message })));
      return;
    }

    cancelBtn.addEventListener("click", async () => {
      if (!window.confirm(`Cancel request ${id}? A running command is stopped; this cannot be undone.`)) return;
      cancelBtn.disabled = true;
      try {
        rec = await SJ.api(`/api/requests/${encodeURIComponent(id)}`, { method: "DELETE" });
        note.textContent = "cancel requested";
        paint();
      } catch (e) { note.textContent = `cancel refused: ${e.message}`; cancelBtn.disabled = false; }
    });

    const addLine = (text) => {
      logEl.append(text + "\n");
      while (logEl.childNodes.length > MAX_LINES) logEl.firstChild.remove();
      logEl.scrollTop = logEl.scrollHeight;
    };
    const onEvent = (kind, data) => {
      if (kind === "log") addLine(data);
      else if (kind === "progress" && rec) { rec.progress = Number(data); paint(); }
      else if (kind === "result" || kind === "error" || kind === "end") reload().catch(() => {});
    };
    // the record is polled too (every 2 s, while not finished) so duration and state stay right
    SJ.every(2000, async () => { if (!rec || !TERMINAL.includes(rec.state)) await reload(); }, signal);
    try {
      await SJ.sse(`/api/requests/${encodeURIComponent(id)}/events`, onEvent, signal);
    } catch (e) {
      if (!signal.aborted) note.textContent = `event stream closed: ${e.message}`;
    }
    if (!signal.aborted) await reload().catch(() => {});
  };
})();

// A query result's text body that is JSON is shown as JSON (pretty), not as a quoted string.
function readable(result) {
  if (!result || typeof result.body !== "string") return result;
  try { return { ...result, body: JSON.parse(result.body) }; } catch (e) { return result; }
}
