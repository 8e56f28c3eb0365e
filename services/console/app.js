// crm agent console: plain JavaScript, no build step. Where the four services answer comes only
// from config.json beside this page (same origin, from the server's settings), never from the
// page's own URL: a link naming another origin must not get the API key sent there.
"use strict";

const SERVICES = ["intake", "case", "notification", "analytics"];
const urls = {}; // filled by loadConfig() before anything is sent
const KEY = "crm.console.key";
const AGENT = "crm.console.agent"; // the agent id the agent typed once, for this tab like the key
const TEAM = "crm.console.team";
const QUEUE_EVERY_MS = 3000; // the queue is polled: simple, and cheap for one team's open cases
const PAGE = 20;
const $ = (id) => document.getElementById(id);

const state = { key: sessionStorage.getItem(KEY), customer: null, seen: new Set(), before: null,
  loading: false, source: null, syncTimer: null, cases: new Map(), queueTimer: null, queueBusy: false,
  queueShown: "", statusShown: false, campaignsBefore: null, campaignsBusy: false };

class ApiError extends Error {
  constructor(status, body) {
    super(describe(status, body));
    this.status = status;
    this.body = body;
  }
}

function describe(status, body) {
  const message = body && body.message ? body.message : "";
  if (status === 401) return `Not signed in: the API key was not accepted (401)${message ? ": " + message : ""}`;
  if (status === 403) return `Not allowed: this key lacks the scope for that (403)${message ? ": " + message : ""}`;
  if (status === 0) return `Service not reachable${message ? ": " + message : ""}`;
  return message ? `${message} (${status})` : `Request failed with ${status}`;
}

async function loadConfig() {
  const response = await fetch("config.json", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`console configuration not available (${response.status})`);
  const config = await response.json();
  for (const name of SERVICES) {
    const url = new URL(config.services[name]); // throws on anything but an absolute URL
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`bad URL for ${name}`);
    urls[name] = url.origin;
  }
  if (config.mail) { // `make run`'s mail sink: a link to its page, never called with the key
    const mail = new URL(config.mail);
    if (mail.protocol === "http:" || mail.protocol === "https:") {
      $("mail-link").href = `${mail.origin}/`;
      $("mail-link").hidden = false;
    }
  }
}

async function api(service, path, { method = "GET", body, headers = {} } = {}) {
  if (!urls[service]) throw new ApiError(0, { message: `${service}: console configuration not loaded` });
  const init = { method, headers: { ...headers } };
  if (state.key) init.headers.Authorization = `Bearer ${state.key}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(urls[service] + path, init);
  } catch (exc) {
    throw new ApiError(0, { message: `${service} at ${urls[service]}` });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (exc) { data = { message: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function showError(exc) {
  const el = $("error");
  if (!exc) { el.hidden = true; el.textContent = ""; return; }
  el.textContent = exc instanceof ApiError ? exc.message : String(exc.message || exc);
  el.hidden = false;
}

async function guarded(fn) {
  showError(null);
  try { await fn(); } catch (exc) { showError(exc); if (exc.status === 401) signOut(false); }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

// --- sign in -------------------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  try {
    await api("intake", "/v1/customers?q=0000&limit=1"); // any agent-scoped read proves the key
  } catch (exc) {
    state.key = null;
    throw exc;
  }
  sessionStorage.setItem(KEY, key);
  $("signin").hidden = true;
  $("workspace").hidden = false;
  $("find-value").focus();
  startQueue();
  await loadSuggestions();
}

function signOut(clear = true) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(AGENT);
  sessionStorage.removeItem(TEAM);
  state.key = null;
  stopQueue();
  closeCustomer();
  showSection("desk");
  $("workspace").hidden = true;
  $("signin").hidden = false;
  if (clear) showError(null);
}

// --- search --------------------------------------------------------------------------------------

async function find(by, value) {
  const found = await api("intake", `/v1/customers?${by}=${encodeURIComponent(value)}`);
  const list = $("results");
  list.replaceChildren();
  if (!found.items.length) {
    list.append(el("li", {}, "No customer found."));
    return;
  }
  if (found.items.length === 1) {
    await openCustomer(found.items[0].customer_id);
    return;
  }
  for (const c of found.items) {
    const label = [c.name, ...c.identifiers.map((i) => i.value)].filter(Boolean).join(", ") || c.customer_id;
    const button = el("button", { type: "button" }, `${label} (${c.customer_id})`);
    button.addEventListener("click", () => guarded(() => openCustomer(c.customer_id)));
    list.append(el("li", {}, button));
  }
}

// --- merge suggestions (docs/identity-trust.md) ------------------------------------------------------

async function loadSuggestions() {
  const found = await api("intake", "/v1/merge-suggestions?status=pending&limit=50");
  const list = $("suggestions");
  list.replaceChildren();
  if (!found.items.length) {
    list.append(el("li", {}, "No pending suggestions."));
    return;
  }
  for (const s of found.items) {
    const by = s.linked_by;
    const text = `${s.merged_id} into ${s.survivor_id}, named by ${by.kind}${by.channel ? "/" + by.channel : ""}: ${by.value} `;
    const item = el("li", { dataset: { suggestion: s.suggestion_id } }, text);
    for (const [label, action] of [["Accept", "accept"], ["Reject", "reject"]]) {
      const button = el("button", { type: "button", "aria-label": `${label} merging ${s.merged_id} into ${s.survivor_id}` }, label);
      button.addEventListener("click", () => guarded(async () => {
        await api("intake", `/v1/merge-suggestions/${encodeURIComponent(s.suggestion_id)}:${action}`, { method: "POST" });
        await loadSuggestions();
      }));
      item.append(button);
    }
    list.append(item);
  }
}

// --- customer ------------------------------------------------------------------------------------

function closeCustomer() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.streamRetry);
  clearInterval(state.syncTimer);
  state.customer = null;
  $("customer").hidden = true;
  $("sync").replaceChildren();
}

async function openCustomer(id) {
  closeCustomer();
  const customer = await api("intake", `/v1/customers/${encodeURIComponent(id)}`);
  state.customer = customer.customer_id;
  state.seen = new Set();
  state.before = null;
  $("results").replaceChildren();
  $("customer-id").textContent = state.customer;
  $("timeline").replaceChildren();
  $("cases").replaceChildren();
  $("customer").hidden = false;
  state.profile = customer;
  state.insights = null;
  renderProfile(customer, null);
  await Promise.all([loadFieldDefs("intake"), loadFieldDefs("case")]); // records.js
  if (state.customer !== customer.customer_id) return;
  renderCustomerRecords(customer);
  renderMerging(customer); // merging.js
  $("profile-h").focus(); // keyboard users land on the customer they opened
  await Promise.all([loadInsights(customer), loadTimeline(), loadCases()]);
  startStream(); // not awaited: the page works while the stream connects
  startSync();
}

function fmtConsent(rows) {
  if (!rows || !rows.length) return "defaults (service allowed, marketing not granted)";
  return rows.map((r) => `${r.purpose}${r.channel ? "/" + r.channel : ""}: ${r.granted ? "granted" : "withdrawn"}`).join("; ");
}

function renderProfile(customer, insights, insightsNote) {
  const p = customer.preferences || {};
  const rows = [
    ["Name", customer.name || "not given"],
    ["Identifiers", customer.identifiers.map((i) => `${i.kind}${i.channel ? "/" + i.channel : ""}: ${i.value}`
      + (i.trust === "claimed" ? " (claimed)" : "")).join(", ") || "none"],
    ["Merged ids", customer.merged_ids.join(", ") || "none"],
    ["VIP", p.vip ? "yes" : "no"],
    ["Preferences", [p.preferred_channel && `channel ${p.preferred_channel}`, p.language && `language ${p.language}`,
      p.region && `region ${p.region}`, p.quiet_hours && `quiet ${p.quiet_hours.start}-${p.quiet_hours.end} ${p.quiet_hours.time_zone}`]
      .filter(Boolean).join(", ") || "none set"],
    ["Consent", fmtConsent(customer.consent)],
  ];
  if (insights) {
    rows.push(["Risk band", `${insights.risk.band} (score ${insights.risk.score})`]);
    rows.push(["Risk reasons", (insights.risk.reasons || []).join("; ") || "none"]);
    rows.push(["Segment", insights.segment || "none"]);
    rows.push(["Open cases", insights.open_cases]);
  } else {
    rows.push(["Risk", insightsNote || "loading insights..."]);
  }
  $("profile").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { fact: k } }, v)]));
}

async function loadInsights(customer) {
  const id = state.customer;
  state.insights = true;
  let insights = null;
  let note = "";
  try {
    insights = await api("analytics", `/v1/customers/${encodeURIComponent(id)}/insights`);
  } catch (exc) {
    note = exc.status === 404 ? "analytics has no insights yet" : exc.message;
  }
  if (id !== state.customer) return;
  state.insights = insights; // none yet: tried again on the next sync round
  renderProfile(customer, insights, note);
}

// --- timeline ------------------------------------------------------------------------------------

// The detail under the label: what was said or done (the label already names the kind of event).
function summary(item) {
  const d = item.data || {};
  if (item.type.startsWith("crm.case.reply_sent.")) return `reply via ${d.channel} by ${d.author}: "${d.body}"`;
  if (item.type.startsWith("crm.notification.")) return notificationDetail(item.type, d);
  if (item.type.startsWith("crm.analytics.campaign_response.")) {
    return [`reached on ${word("channel", d.channel)}`, present(d.amount) && `amount ${d.amount}`,
      d.attributed_by === "metadata" ? "the interaction named the campaign" : "within the attribution window"]
      .filter(Boolean).join(" · ");
  }
  const parts = [];
  if (d.channel && !item.type.startsWith("crm.interaction.recorded.")) {
    parts.push(`${d.direction || ""} ${d.kind || ""} via ${d.channel}`.trim());
  }
  if (d.content) parts.push(`"${d.content}"`);
  if (d.from_status || d.to_status) parts.push(`${d.from_status} → ${d.to_status}`);
  if (d.owner) parts.push(`owner ${d.owner}`);
  if (d.text) parts.push(`note: ${d.text}`);
  if (d.title) parts.push(d.title);
  if (d.name !== undefined && item.type.startsWith("crm.customer.profile_changed.")) parts.push(`name ${d.name ?? "cleared"}`);
  return parts.join(" · ");
}

// The label says channel, audience and outcome; here which rule made the message and what next.
function notificationDetail(type, d) {
  const parts = [`rule ${d.rule}`];
  if (d.recipient && d.audience === "staff") parts.push(`for ${d.recipient.replace(/^staff:/, "")}`);
  if (d.attempt) parts.push(`try ${d.attempt}`);
  if (type.startsWith("crm.notification.scheduled.") && d.delayed_reason && d.deliver_at) {
    parts.push(`goes out ${new Date(d.deliver_at).toLocaleString()}`);
  }
  if (d.digest_id) parts.push("in a digest");
  if (type.startsWith("crm.notification.failed.")) {
    parts.push(d.final ? "no more tries" : `next try ${new Date(d.next_attempt_at).toLocaleString()}`);
  }
  return parts.join(" · ");
}

// An interaction shows when it happened on its channel (occurred_at), the recording time on hover
// when the two differ as shown; every other event shows when it was recorded.
function when(item) {
  const recorded = new Date(item.time).toLocaleString();
  const occurredAt = item.data && item.data.occurred_at;
  const occurred = occurredAt ? new Date(occurredAt) : null;
  if (!occurred || Number.isNaN(occurred.getTime())) return el("time", { datetime: item.time }, recorded);
  const props = { datetime: occurredAt, class: "occurred" };
  if (occurred.toLocaleString() !== recorded) props.title = `recorded ${recorded}`;
  return el("time", props, occurred.toLocaleString());
}

// A campaign's message or response names the campaign: by its name once notification has told
// it, by its id until then (or when the key may not read campaigns).
const campaignNames = new Map(); // campaign id -> its name; null while asked or unknown

function timelineLabel(item) {
  const id = item.data && item.data.campaign_id;
  if (!id) return labelOf(item);
  return labelOf({ ...item, data: { ...item.data, campaign_id: campaignNames.get(id) || id } });
}

function nameCampaign(id) {
  if (campaignNames.has(id)) return;
  campaignNames.set(id, null);
  api("notification", `/v1/campaigns/${encodeURIComponent(id)}`).then((c) => {
    campaignNames.set(id, c.name);
    for (const node of document.querySelectorAll("#timeline li[data-campaign-id]")) {
      if (node.dataset.campaignId === id) node.querySelector(".label").textContent = timelineLabel(node.crmItem);
    }
  }).catch(() => {}); // the id stays: still says which campaign
}

function timelineItem(item, fresh) {
  const campaignId = item.data && item.data.campaign_id;
  const node = el("li", { class: fresh ? "new" : "",
    dataset: { eventId: item.event_id, type: item.type, ...(campaignId ? { campaignId } : {}) } },
  el("span", { class: "label" }, timelineLabel(item)),
  when(item),
  el("div", { class: "summary" }, summary(item)));
  node.crmItem = item;
  if (campaignId) nameCampaign(campaignId);
  return node;
}

// Infinite scroll: the first page on opening, the next older one whenever the sentinel under the
// list comes into view. The "Load older events" button does the same for keyboard users.
async function loadTimeline() {
  if (state.loading) return;
  const id = state.customer;
  const q = new URLSearchParams({ limit: PAGE });
  if (state.before) q.set("before", state.before);
  state.loading = true;
  $("timeline-end").textContent = "loading older events...";
  let page;
  try {
    page = await api("case", `/v1/customers/${encodeURIComponent(id)}/timeline?${q}`);
  } finally {
    state.loading = false;
  }
  if (id !== state.customer) return;
  for (const item of page.events) {
    if (state.seen.has(item.event_id)) continue;
    state.seen.add(item.event_id);
    $("timeline").append(timelineItem(item, false));
  }
  state.before = page.next_before;
  $("load-more").hidden = !state.before;
  $("timeline-end").textContent = state.before ? "" : "start of the timeline";
  // A short page can leave the sentinel in view, which the observer does not report again.
  if (state.before && inView($("timeline-end"))) await loadTimeline();
}

async function reloadTimeline() {
  state.seen = new Set();
  state.before = null;
  $("timeline").replaceChildren();
  await loadTimeline();
}

function inView(node) {
  const box = node.getBoundingClientRect();
  return box.bottom >= 0 && box.top <= window.innerHeight;
}

const olderPages = new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && state.customer && state.before && !state.loading) {
    guarded(loadTimeline);
  }
});

// The stream cannot carry the key in a header (EventSource sends none), and a URL must not carry
// it: each connection opens with a fresh single-use ticket from case, asked for with the header.
// A ticket works once, so on any error the page closes the stream and opens a new one itself.
async function startStream() {
  const id = state.customer;
  let ticket;
  try {
    ({ ticket } = await api("case", "/v1/stream-tickets", { method: "POST", body: { customer_id: id } }));
  } catch (exc) {
    if (exc.status === 401) { signOut(false); showError(exc); return; }
    $("live").textContent = "reconnecting...";
    state.streamRetry = setTimeout(() => { if (id === state.customer) startStream(); }, 2000);
    return;
  }
  if (id !== state.customer || state.source) return;
  const url = `${urls.case}/v1/customers/${encodeURIComponent(id)}/timeline/stream?ticket=${encodeURIComponent(ticket)}`;
  const source = new EventSource(url);
  state.source = source;
  source.onopen = () => { $("live").textContent = "live"; };
  source.onerror = () => {
    source.close();
    if (state.source !== source) return;
    state.source = null;
    $("live").textContent = "reconnecting...";
    state.streamRetry = setTimeout(() => { if (id === state.customer && !state.source) startStream(); }, 1000);
  };
  source.addEventListener("timeline", (ev) => {
    const item = JSON.parse(ev.data);
    if (state.seen.has(item.event_id)) return;
    state.seen.add(item.event_id);
    $("timeline").prepend(timelineItem(item, true));
    if (item.type.startsWith("crm.case.")) refreshCase(item.data.case_id).catch(() => {});
    // A merge brings the duplicate's older events in, an unmerge takes them away: read it again.
    if (/^crm\.customer\.(un)?merged\./.test(item.type)) guarded(reloadTimeline);
  });
}

// --- sync badges ---------------------------------------------------------------------------------

// In sync = the same digest as intake's timeline (the same events); otherwise how many events the
// service lacks next to intake (or has that intake has not applied yet).
async function syncOnce() {
  const id = state.customer;
  if (!id) return;
  const results = await Promise.all(SERVICES.map(async (name) => {
    try { return [name, await api(name, `/v1/customers/${encodeURIComponent(id)}/timeline/digest`)]; }
    catch (exc) { return [name, null, exc]; }
  }));
  if (id !== state.customer) return;
  const reachable = results.filter(([, d]) => d);
  const [, reference] = reachable.find(([name]) => name === "intake")
    || reachable.reduce((best, r) => (!best || r[1].events > best[1].events ? r : best), null) || [];
  const badges = results.map(([name, d, exc]) => {
    const badge = (cls, text, extra = {}) => el("span", { class: `badge ${cls}`, dataset: { service: name }, ...extra }, `${name}: ${text}`);
    if (!d) return badge("down", "unreachable", { title: exc.message });
    if (d.digest === reference.digest) return badge("ok", "in sync", { title: `digest ${d.digest.slice(0, 12)}` });
    const behind = reference.events - d.events;
    if (behind > 0) return badge("behind", `behind by ${behind}`);
    return badge("behind", behind < 0 ? `ahead by ${-behind}` : "differs");
  });
  $("sync").replaceChildren(...badges);
  if (!state.insights && state.profile) loadInsights(state.profile);
}

function startSync() {
  syncOnce();
  state.syncTimer = setInterval(syncOnce, 2000);
}

// --- cases ---------------------------------------------------------------------------------------

async function loadCases() {
  const page = await api("case", `/v1/cases?customer_id=${encodeURIComponent(state.customer)}&limit=20`);
  $("cases").replaceChildren();
  state.cases = new Map();
  for (const row of page.cases) await refreshCase(row.case_id);
}

function renderCase(c) {
  const shown = state.cases.get(c.case_id);
  if (shown && shown.version > c.version) return; // a slower answer about an older version
  state.cases.set(c.case_id, c);
  let node = document.querySelector(`.case[data-case-id="${c.case_id}"]`);
  if (!node) {
    node = $("case-template").content.firstElementChild.cloneNode(true);
    node.dataset.caseId = c.case_id;
    bindCase(node, c.case_id);
    $("cases").prepend(node);
  }
  node.dataset.status = c.status;
  node.dataset.version = c.version;
  node.querySelector(".case-title").textContent = c.title || `${c.type} case`;
  node.querySelector(".case-status").textContent = c.status;
  node.querySelector(".case-meta").textContent =
    `${c.type}, ${c.priority}, team ${c.team}, owner ${c.owner || "nobody"}, version ${c.version}, ${c.notes.length} note(s)`;
  // A live refresh must not change what the agent has picked but not yet sent.
  const select = node.querySelector("select[name=status]");
  const picked = select.value;
  select.replaceChildren(...c.allowed_transitions.map((s) => el("option", { value: s }, s)));
  if (c.allowed_transitions.includes(picked)) select.value = picked;
  node.querySelector(".status-form button").disabled = !c.allowed_transitions.length;
  renderCaseRecords(node, c); // records.js
}

async function refreshCase(caseId) {
  if (!caseId) return;
  renderCase(await api("case", `/v1/cases/${encodeURIComponent(caseId)}`));
}

function bindCase(node, caseId) {
  const command = (path, form, body) => guarded(async () => {
    const c = state.cases.get(caseId);
    node.querySelector(".status-error").textContent = "";
    let view;
    try {
      view = await api("case", `/v1/cases/${encodeURIComponent(caseId)}/${path}`,
        { method: "POST", body, headers: { "If-Match": `"${c.version}"` } });
    } catch (exc) {
      // A refused status change is said beside the status control (and the fields it needs).
      if (path !== "status" || !(exc instanceof ApiError) || exc.status < 400 || exc.status >= 500 || exc.status === 401) throw exc;
      showStatusError(node, exc);
      return;
    }
    renderCase(view);
    form.reset();
  });
  const on = (selector, build) => {
    const form = node.querySelector(selector);
    form.addEventListener("submit", (ev) => { ev.preventDefault(); command(...build(form)); });
  };
  on(".assign-form", (f) => ["assign", f, { owner: f.owner.value.trim() }]);
  on(".status-form", (f) => ["status", f, { status: f.status.value }]);
  on(".note-form", (f) => ["notes", f, { author: "agent console", text: f.text.value }]);
  // No author: case signs the reply with the name of the key the agent signed in with.
  on(".reply-form", (f) => ["replies", f, { channel: f.channel.value, body: f.body.value }]);
}

// --- work queues (case's GET /v1/queues/{team}) ----------------------------------------------------

function agentId() { return $("work-agent").value.trim(); }
function team() { return $("work-team").value.trim() || "support"; }

function stopQueue() {
  clearInterval(state.queueTimer);
  state.queueTimer = null;
  state.queueShown = "";
  state.statusShown = false;
  for (const id of ["queue-mine", "queue-unassigned", "queue-team", "queue-escalations"]) $(id).replaceChildren();
  $("agent-state").textContent = "";
  $("queue-live").textContent = "";
}

function startQueue() {
  stopQueue();
  $("work-team").value = sessionStorage.getItem(TEAM) || "support";
  $("work-agent").value = sessionStorage.getItem(AGENT) || "";
  refreshQueue();
  state.queueTimer = setInterval(refreshQueue, QUEUE_EVERY_MS);
}

// Polled, not streamed; a hidden tab asks nothing and catches up when it is shown again.
async function refreshQueue() {
  if (!state.key || state.queueBusy || document.visibilityState === "hidden") return;
  state.queueBusy = true;
  try {
    const [queue, agent] = await Promise.all([
      api("case", `/v1/queues/${encodeURIComponent(team())}`),
      agentId() ? api("case", `/v1/agents/${encodeURIComponent(agentId())}`).catch((exc) => {
        if (exc.status === 404) return null; // not a registered agent: said below, queues still shown
        throw exc;
      }) : Promise.resolve(undefined),
    ]);
    renderAgent(agent);
    renderQueue(queue);
    $("queue-live").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (exc) {
    if (exc.status === 401) { signOut(false); showError(exc); return; }
    $("queue-live").textContent = `not updated: ${exc.message}`;
  } finally {
    state.queueBusy = false;
  }
}

function renderAgent(agent) {
  const line = $("agent-state");
  if (agent === undefined) { line.textContent = "type your agent id to see your cases and set your status"; return; }
  if (agent === null) { line.textContent = `${agentId()} is not a registered agent`; return; }
  line.textContent = `${agent.name}: ${agent.status}, ${agent.load} of ${agent.capacity} open case(s)`;
  line.dataset.status = agent.status;
  // Only once: a refresh must not change what the agent has picked but not yet set.
  if (!state.statusShown) { $("agent-status").value = agent.status; state.statusShown = true; }
}

function queueItem(c) {
  const due = c.due_at ? `due ${new Date(c.due_at).toLocaleString()}` : "no due time";
  const label = `${c.title ? c.title + ": " : ""}${c.type}, ${c.priority}, ${c.status}, ${due}`
    + `${c.escalated ? ", escalated" : ""}${c.breached ? ", breached" : ""} (customer ${c.customer_id})`;
  const button = el("button", { type: "button", class: "queue-case", dataset: { caseId: c.case_id } }, label);
  button.addEventListener("click", () => guarded(() => openCustomer(c.customer_id)));
  return el("li", { class: c.escalated ? "escalated" : "", dataset: { caseId: c.case_id, customerId: c.customer_id } },
    button);
}

function fill(listId, cases, empty) {
  $(listId).replaceChildren(...(cases.length ? cases.map(queueItem) : [el("li", { class: "empty" }, empty)]));
}

function renderQueue(q) {
  const me = agentId();
  const shown = JSON.stringify([q, me]);
  if (shown === state.queueShown) return; // unchanged: keep the lists (and the keyboard's place)
  state.queueShown = shown;
  const focused = document.activeElement && document.activeElement.closest(".queue") ? document.activeElement : null;
  const refocus = focused && focused.dataset.caseId ? `${focused.closest(".queue").id}|${focused.dataset.caseId}` : "";
  const mine = q.owners.find((o) => o.owner === me);
  fill("queue-mine", mine ? mine.cases : [], me ? "No open cases of yours." : "Type your agent id above to see your cases.");
  fill("queue-unassigned", q.unassigned, "Nothing waiting.");
  fill("queue-escalations", q.escalations, "No escalations.");
  $("queue-team").replaceChildren(...(q.owners.length ? q.owners.map((o) => {
    const a = o.agent;
    const who = a ? `${o.owner} (${a.name}): ${a.status}, ${a.load} of ${a.capacity}` : `${o.owner} (not a registered agent)`;
    return el("li", { class: "owner", dataset: { owner: o.owner } }, el("strong", {}, who),
      el("ul", { class: "queue-cases" }, ...o.cases.map(queueItem)));
  }) : [el("li", { class: "empty" }, "Nobody of this team owns an open case.")]));
  for (const [tab, n] of [["mine", mine ? mine.cases.length : 0], ["unassigned", q.unassigned.length],
    ["team", q.owners.reduce((sum, o) => sum + o.cases.length, 0)], ["escalations", q.escalations.length]]) {
    $(`tab-${tab}`).dataset.count = n;
    $(`tab-${tab}`).textContent = `${tab[0].toUpperCase()}${tab.slice(1)} (${n})`;
  }
  if (refocus) {
    const [list, caseId] = refocus.split("|");
    const again = [...$(list).querySelectorAll("button.queue-case")].find((b) => b.dataset.caseId === caseId);
    if (again) again.focus();
  }
}

// Tabs after the WAI-ARIA pattern: one tab stop, arrow keys, Home and End move between tabs.
function selectTab(tab) {
  for (const t of document.querySelectorAll("#work [role=tab]")) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
}

function bindTabs() {
  const tabs = [...document.querySelectorAll("#work [role=tab]")];
  for (const [i, tab] of tabs.entries()) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (ev) => {
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      const next = tabs[(to + tabs.length) % tabs.length];
      selectTab(next);
      next.focus();
    });
  }
}

// --- campaigns (notification's GET /v1/campaigns; analytics' results per campaign) ----------------

function showSection(name) {
  for (const button of document.querySelectorAll("nav.sections button")) {
    const on = button.dataset.section === name;
    $(button.getAttribute("aria-controls")).hidden = !on;
    if (on) button.setAttribute("aria-current", "page"); else button.removeAttribute("aria-current");
  }
}

// Results are analytics': a campaign it has not read yet (404), or any answer but a page of
// results, shows "–" rather than failing the whole list.
async function campaignResults(id) {
  try {
    return { results: await api("analytics", `/v1/campaigns/${encodeURIComponent(id)}/results`) };
  } catch (exc) {
    return { results: null, note: exc.status === 404 ? "analytics does not know this campaign yet" : exc.message };
  }
}

function campaignRow(c, { results, note }) {
  const counts = c.counts;
  const suppressed = Object.values(counts.suppressed).reduce((sum, n) => sum + n, 0);
  const reasons = Object.entries(counts.suppressed).map(([r, n]) => `${word("reason", r)}: ${n}`).join(", ");
  const dash = (value, show = String) => (results && present(value) ? show(value) : "–");
  const cell = (col, text, extra = {}) => el("td", { dataset: { col }, ...extra }, text);
  const num = (col, text, extra = {}) => cell(col, text, { class: "num", ...extra });
  const missing = results ? {} : { title: note };
  const due = new Date(c.send_at).toLocaleString();
  const name = el("td", { dataset: { col: "campaign" } }, el("strong", {}, c.name),
    el("div", { class: "campaign-meta" }, el("code", {}, c.campaign_id), ` · ${c.purpose} · due ${due}`));
  return el("tr", { dataset: { campaignId: c.campaign_id, status: c.status } },
    name,
    el("td", { dataset: { col: "status" } }, el("span", { class: "badge status" }, c.status),
      c.reason && c.reason !== c.status ? ` ${word("reason", c.reason)}` : ""),
    num("audience_size", present(c.audience_size) ? c.audience_size : "not fixed yet"),
    num("scheduled", counts.scheduled),
    num("sent", counts.sent),
    num("delivered", counts.delivered),
    num("failed", counts.failed),
    num("suppressed", suppressed, reasons ? { title: reasons } : {}),
    num("pending", counts.pending),
    num("responded", dash(results && results.responded), missing),
    num("response_rate", dash(results && results.response_rate, (r) => `${(r * 100).toFixed(1)} %`), missing),
    num("conversions", dash(results && results.conversions), missing),
    num("revenue", dash(results && results.revenue, (r) => r.toFixed(2)), missing),
    num("unsubscribed", dash(results && results.unsubscribed), missing));
}

async function loadCampaigns(more = false) {
  if (state.campaignsBusy) return;
  state.campaignsBusy = true;
  try {
    const q = new URLSearchParams({ limit: PAGE });
    if (more && state.campaignsBefore) q.set("before", state.campaignsBefore);
    const page = await api("notification", `/v1/campaigns?${q}`);
    const results = await Promise.all(page.campaigns.map((c) => campaignResults(c.campaign_id)));
    const rows = page.campaigns.map((c, i) => campaignRow(c, results[i]));
    if (more) $("campaign-rows").append(...rows); else $("campaign-rows").replaceChildren(...rows);
    state.campaignsBefore = page.next_before;
    $("campaigns-more").hidden = !page.next_before;
    $("campaigns-empty").hidden = $("campaign-rows").children.length > 0;
    $("campaigns-live").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } finally {
    state.campaignsBusy = false;
  }
}

// --- wiring --------------------------------------------------------------------------------------

function onSubmit(id, fn) {
  $(id).addEventListener("submit", (ev) => { ev.preventDefault(); guarded(() => fn(ev.target)); });
}

const configured = Promise.all([loadConfig(), loadLabels()]); // labels.js
onSubmit("signin-form", async (f) => { await configured; await signIn(f.key.value.trim()); });
onSubmit("find-form", (f) => find(f.by.value, f.value.value.trim()));
onSubmit("open-case-form", async (f) => {
  const body = { customer_id: state.customer, type: f.type.value, priority: f.priority.value };
  if (f.title.value.trim()) body.title = f.title.value.trim();
  renderCase(await api("case", "/v1/cases", { method: "POST", body }));
  f.title.value = "";
});
$("load-more").addEventListener("click", () => guarded(loadTimeline));
$("suggestions-refresh").addEventListener("click", () => guarded(loadSuggestions));
olderPages.observe($("timeline-end"));
$("signout").addEventListener("click", () => signOut());
for (const button of document.querySelectorAll("nav.sections button")) {
  button.addEventListener("click", () => guarded(async () => {
    showSection(button.dataset.section);
    if (button.dataset.section === "campaigns") {
      $("campaigns-h").focus();
      await loadCampaigns();
    }
    if (button.dataset.section === "reports") await openReports(); // reports.js
  }));
}
$("campaigns-refresh").addEventListener("click", () => guarded(() => loadCampaigns()));
$("campaigns-more").addEventListener("click", () => guarded(() => loadCampaigns(true)));
bindTabs();
initReports(); // reports.js
onSubmit("work-form", async (f) => {
  sessionStorage.setItem(TEAM, f.team.value.trim());
  sessionStorage.setItem(AGENT, f.agent.value.trim());
  state.statusShown = false;
  state.queueShown = "";
  await refreshQueue();
});
onSubmit("agent-status-form", async (f) => {
  if (!agentId()) throw new Error("type your agent id first (the name of your key)");
  await api("case", `/v1/agents/${encodeURIComponent(agentId())}/status`, { method: "PUT", body: { status: f.status.value } });
  sessionStorage.setItem(AGENT, agentId());
  state.statusShown = false;
  await refreshQueue();
});
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refreshQueue(); });

guarded(async () => {
  await configured;
  if (state.key) await signIn(state.key);
});
