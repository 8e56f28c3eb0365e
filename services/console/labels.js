// Human labels for the timeline's event types, from labels.json beside this page (one entry per
// event type of contracts/, checked by tests/browser/test_console_labels.py). A template names
// fields of the event's data: {field} (or {field|text} when it may be null), and [ ... ] is left
// out when a field inside it is missing or reads as nothing (a message's kind, say). `words`
// turns a field's values into words; any other value is shown with spaces for underscores, but
// ids (*_id fields) and tags as they are; a list is its items', comma separated.
"use strict";

const LABELS = { labels: {}, words: {} };

// A missing table must not stop the page: every type then gets its readable name.
async function loadLabels() {
  try {
    const response = await fetch("labels.json", { credentials: "omit" });
    if (response.ok) Object.assign(LABELS, await response.json());
  } catch (exc) { /* readable names instead */ }
}

function capitalized(text) {
  const t = text.replace(/\s+/g, " ").trim();
  return t ? t[0].toUpperCase() + t.slice(1) : t;
}

// crm.case.sla_warning.v1 -> "Case sla warning": a type this page does not know yet, never raw.
function readableType(type) {
  return capitalized(String(type).replace(/^crm\./, "").replace(/\.v\d+$/, "").replace(/[._]/g, " "));
}

function present(value) { return value !== null && value !== undefined && value !== ""; }

// Fields whose values are names to show as they are, like ids: tags (normalised, "_" is theirs).
const VERBATIM = new Set(["added", "removed", "tags"]);

function word(field, value) {
  if (Array.isArray(value)) return value.map((v) => word(field, v)).join(", ");
  const words = LABELS.words[field] || {};
  const key = String(value);
  if (field.endsWith("_id") || VERBATIM.has(field)) return key; // an id (or the name shown for it) is never a word to rewrite
  return Object.prototype.hasOwnProperty.call(words, key) ? words[key] : key.replace(/_/g, " ");
}

function renderLabel(template, data) {
  const fields = (text) => [...text.matchAll(/\{(\w+)(?:\|[^}]*)?\}/g)].map((m) => m[1]);
  const text = template
    .replace(/\[([^\]]*)\]/g, (_, inner) =>
      (fields(inner).every((f) => present(data[f]) && word(f, data[f]) !== "") ? inner : ""))
    .replace(/\{(\w+)(?:\|([^}]*))?\}/g, (_, f, fallback) => (present(data[f]) ? word(f, data[f]) : fallback ?? ""));
  return capitalized(text);
}

function labelOf(item) {
  const template = LABELS.labels[item.type];
  return template === undefined ? readableType(item.type) : renderLabel(template, item.data || {});
}
