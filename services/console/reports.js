// The Reports page (docs/console.md): analytics' grouped case KPIs (GET /v1/kpis?group_by=) as a
// table with its totals, and the two CSV reports. The key goes in a header, so a download is a
// fetch turned into a Blob and saved through an object URL, never a plain link.
// Uses app.js's api(), el(), urls, state, ApiError, describe() and guarded().
"use strict";

const DAY_MS = 86_400_000;

function isoDay(date) { return date.toISOString().slice(0, 10); }

// The form's UTC days as analytics' [from, to): the "to" day is included, so to = the next midnight.
function reportRange() {
  const from = $("report-from").value;
  const to = $("report-to").value;
  if (!from || !to) throw new Error("pick both days of the range");
  const end = new Date(Date.parse(`${to}T00:00:00Z`) + DAY_MS);
  return { from: `${from}T00:00:00Z`, to: end.toISOString().replace(".000Z", "Z") };
}

// group_by offers field.<name> for each non-personal case field (personal ones are never reported).
async function fillGroupBy() {
  const select = $("report-group");
  const picked = select.value;
  for (const option of [...select.querySelectorAll("option[data-field]")]) option.remove();
  const defs = fieldDefs.case || (await loadFieldDefs("case"));
  for (const d of defs.filter((f) => !f.personal)) {
    select.append(el("option", { value: `field.${d.name}`, dataset: { field: d.name } }, `field: ${fieldLabel(d)}`));
  }
  if ([...select.options].some((o) => o.value === picked)) select.value = picked;
}

function seconds(value) {
  if (!present(value)) return "–";
  const s = Number(value);
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 2 * DAY_MS / 1000) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function pct(value) { return present(value) ? `${Number(value).toFixed(1)} %` : "–"; }

function kpiCells(cases, handled, csat) {
  const num = (col, text) => el("td", { class: "num", dataset: { col } }, text);
  return [
    num("opened", cases.opened), num("resolved", cases.resolved), num("cases_handled", handled),
    num("closed_same_day", cases.closed_same_day),
    num("first_response", seconds(cases.first_response_seconds.mean)),
    num("resolution", seconds(cases.resolution_seconds.mean)),
    num("handle", seconds(cases.handle_seconds.mean)),
    num("fcr", pct(cases.first_contact_resolution_pct)), num("sla", pct(cases.sla_compliance_pct)),
    num("csat_responses", csat.responses), num("csat_mean", present(csat.mean) ? Number(csat.mean).toFixed(2) : "–"),
  ];
}

function reportQuery() {
  const range = reportRange();
  return new URLSearchParams({ ...range, group_by: $("report-group").value });
}

async function loadReport() {
  $("report-error").textContent = "";
  const q = reportQuery();
  let body;
  try {
    body = await api("analytics", `/v1/kpis?${q}`);
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status === 401 || exc.status === 0) throw exc;
    $("report-error").textContent = readable(exc);
    return;
  }
  const none = q.get("group_by") === "tag" ? "no tag" : "none";
  $("report-rows").replaceChildren(...body.groups.map((g) => el("tr", { dataset: { group: g.group ?? "" } },
    el("th", { scope: "row", dataset: { col: "group" } }, g.group ?? `(${none})`),
    ...kpiCells(g.cases, g.cases_handled, g.csat))));
  const totals = body.totals;
  $("report-totals").replaceChildren(el("tr", { class: "totals" },
    el("th", { scope: "row", dataset: { col: "group" } }, "Total"),
    ...kpiCells(totals.cases, totals.cases.resolved, totals.csat)));
  $("report-note").textContent = body.groups.length
    ? (body.sums_to_totals ? "The rows add up to the totals." : "A case can count in several rows: the rows do not add up to the totals.")
    : "No cases in this range.";
}

// The file name when analytics' Content-Disposition (exposed by CORS) names none, as analytics
// names them: cases-<from>-<to>.csv, kpis-by-<group>-<from>-<to>.csv, stamps as 20260101T000000Z.
function reportName(kind, range, groupBy) {
  const stamp = (iso) => iso.replace(/[-:]/g, "");
  const by = groupBy ? `-by-${groupBy.replace(".", "-")}` : "";
  return `${kind}${by}-${stamp(range.from)}-${stamp(range.to)}.csv`;
}

// A CSV with the key in the header: fetched, held as a Blob, saved under analytics' name for it.
async function download(path, name) {
  $("download-state").textContent = "downloading...";
  let response;
  try {
    response = await fetch(urls.analytics + path, { headers: { Authorization: `Bearer ${state.key}` } });
  } catch (exc) {
    $("download-state").textContent = "";
    throw new ApiError(0, { message: `analytics at ${urls.analytics}` });
  }
  if (!response.ok) {
    const text = await response.text();
    let data = null;
    try { data = JSON.parse(text); } catch (exc) { data = { message: text }; }
    $("download-state").textContent = "";
    const exc = new ApiError(response.status, data);
    if (exc.status === 401) throw exc;
    $("report-error").textContent = readable(exc);
    return;
  }
  const blob = await response.blob();
  const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const link = el("a", { href: URL.createObjectURL(blob), download: named ? named[1] : name, hidden: "" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000); // the download has its copy by then
  $("download-state").textContent = `saved ${link.download}`;
}

function initReports() {
  const today = new Date();
  $("report-to").value = isoDay(today);
  $("report-from").value = isoDay(new Date(today.getTime() - 6 * DAY_MS));
  $("report-form").addEventListener("submit", (ev) => { ev.preventDefault(); guarded(loadReport); });
  $("download-cases").addEventListener("click", () => guarded(async () => {
    $("report-error").textContent = "";
    const range = reportRange();
    await download(`/v1/reports/cases.csv?${new URLSearchParams(range)}`, reportName("cases", range));
  }));
  $("download-kpis").addEventListener("click", () => guarded(async () => {
    $("report-error").textContent = "";
    const q = reportQuery();
    const range = { from: q.get("from"), to: q.get("to") };
    await download(`/v1/reports/kpis.csv?${q}`, reportName("kpis", range, q.get("group_by")));
  }));
}

async function openReports() {
  $("reports-h").focus();
  await fillGroupBy();
}
