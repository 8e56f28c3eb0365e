// Merging a duplicate into the open customer by hand, and undoing a merge (intake's
// POST /v1/customers/{id}/merge and /unmerge, docs/merge-and-unmerge.md). Both are agent commands,
// recorded as events and in the audit log; the page then shows the customer again.
// Uses app.js's api(), el(), state, guarded(), renderProfile(), and records.js's shownHere/readable.
"use strict";

function identifierText(i) { return `${i.kind}${i.channel ? "/" + i.channel : ""}: ${i.value}`; }

// A refusal (404 unknown id, 409 already merged / not merged, 410 erased, 422) is said beside the
// form; anything else goes to the page's error line.
async function mergeCommand(slot, path, body) {
  slot.textContent = "";
  const id = state.customer;
  try {
    await api("intake", `/v1/customers/${encodeURIComponent(id)}/${path}`, { method: "POST", body });
  } catch (exc) {
    if (!shownHere(exc)) throw exc;
    slot.textContent = readable(exc);
    return;
  }
  await refreshProfile(id);
}

// The profile again, the live stream kept open: the merge or unmerge event arrives on it, and
// the timeline is read again then (app.js), once case has applied it.
async function refreshProfile(id) {
  const customer = await api("intake", `/v1/customers/${encodeURIComponent(id)}`);
  if (state.customer !== id) return;
  state.profile = customer;
  renderProfile(customer, state.insights && state.insights !== true ? state.insights : null);
  renderCustomerRecords(customer);
  renderMerging(customer);
}

function mergeForm() {
  const input = el("input", { id: "merge-id", name: "merged_id", maxlength: "64", autocomplete: "off", required: "" });
  const error = el("span", { class: "field-error", id: "merge-error", role: "alert" });
  input.setAttribute("aria-describedby", error.id);
  const form = el("form", { class: "merge-form row" },
    el("label", { for: input.id }, "Duplicate's customer id"), input,
    el("button", { type: "submit" }, "Merge into this customer"), error);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const merged = input.value.trim();
    if (merged) guarded(() => mergeCommand(error, "merge", { merged_id: merged }));
  });
  return form;
}

// One form per merged id: which of the customer's identifiers were the duplicate's (they go back
// to it), and why.
function unmergeForm(customer, mergedId, n) {
  const error = el("span", { class: "field-error", id: `unmerge-${n}-error`, role: "alert" });
  const boxes = customer.identifiers.map((i, k) => {
    const box = el("input", { type: "checkbox", id: `unmerge-${n}-id-${k}`, dataset: { kind: i.kind, value: i.value } });
    if (i.channel) box.dataset.channel = i.channel;
    return el("li", {}, box, el("label", { for: box.id, class: "inline" }, identifierText(i)));
  });
  const reason = el("input", { id: `unmerge-${n}-reason`, name: "reason", maxlength: "500" });
  const form = el("form", { class: "unmerge-form", dataset: { mergedId: mergedId } },
    el("fieldset", {}, el("legend", {}, `Identifiers that go back to ${mergedId}`),
      el("ul", { class: "plain" }, ...boxes)),
    el("label", { for: reason.id }, "Reason (optional)"), reason,
    el("button", { type: "submit", "aria-label": `Undo the merge of ${mergedId}` }, "Undo merge"), error);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const identifiers = [...form.querySelectorAll("input[type=checkbox]:checked")].map((b) => ({
      kind: b.dataset.kind, value: b.dataset.value, ...(b.dataset.channel ? { channel: b.dataset.channel } : {}),
    }));
    const body = { merged_id: mergedId, identifiers };
    if (reason.value.trim()) body.reason = reason.value.trim();
    guarded(() => mergeCommand(error, "unmerge", body));
  });
  return el("details", { class: "unmerge" }, el("summary", {}, `Undo the merge of ${mergedId}`), form);
}

function renderMerging(customer) {
  $("merging").replaceChildren(mergeForm(), ...customer.merged_ids.map((id, n) => unmergeForm(customer, id, n)));
}
