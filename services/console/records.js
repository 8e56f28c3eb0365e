// Typed fields and tags on the customer and case panels (docs/console.md): the definitions come
// from each service's GET /v1/admin/fields (intake: customer fields, case: case fields), the values
// from the record itself. Everything is built with el()/textContent: values and tags are data.
// Uses app.js's api(), el(), ApiError and guarded().
"use strict";

const ERASED = new Set(["[erased]", "[sealed]"]); // a personal value that cannot be read any more
const fieldDefs = { intake: null, case: null }; // service -> [definition], read on each customer opened

async function loadFieldDefs(service) {
  try {
    const body = await api(service, "/v1/admin/fields");
    const rows = body.items || [];
    fieldDefs[service] = rows.filter(Boolean).sort((a, b) => a.name.localeCompare(b.name));
  } catch (exc) {
    if (exc.status !== 403) throw exc;
    fieldDefs[service] = []; // a key that may not read them sees no fields, not an error
  }
  return fieldDefs[service];
}

function caseDefs(caseType) {
  return (fieldDefs.case || []).filter((d) => !d.case_types || d.case_types.includes(caseType));
}

function fieldLabel(d) { return d.label || d.name.replace(/_/g, " "); }

// The control for one field; its value as the input holds it (bool and enum: a select, so "not set"
// is a choice; a checkbox could not clear).
function fieldControl(d, value, id) {
  const props = { id, name: d.name, dataset: { field: d.name, type: d.type } };
  if (d.type === "enum" || d.type === "bool") {
    const options = d.type === "bool" ? [["true", "yes"], ["false", "no"]] : d.values.map((v) => [v, v]);
    const select = el("select", props, el("option", { value: "" }, "not set"),
      ...options.map(([v, text]) => el("option", { value: v }, text)));
    const now = present(value) ? String(value) : "";
    // A value once valid stays readable after the enum lost it: shown, and kept unless changed.
    if (now && !options.some(([v]) => v === now)) select.append(el("option", { value: now }, `${now} (no longer offered)`));
    select.value = now;
    return select;
  }
  const type = { number: "number", date: "date" }[d.type] || "text";
  const input = el("input", { ...props, type, ...(type === "number" ? { step: "any" } : { maxlength: "2000" }) });
  input.value = present(value) ? String(value) : "";
  return input;
}

// The value to send for what the control holds: null clears; undefined: not a value of that type.
function controlValue(d, control) {
  const raw = control.value;
  if (raw.trim() === "") return null;
  if (d.type === "bool") return raw === "true";
  if (d.type === "number") {
    const n = Number(raw);
    return Number.isFinite(n) ? n : undefined;
  }
  return raw;
}

// A form of fields: `values` by name; `save(changed)` sends them and returns the record's fields now.
function fieldsForm({ defs, values, prefix, save }) {
  const form = el("form", { class: "fields-form", novalidate: "" });
  form.original = { ...values };
  if (!defs.length) {
    form.append(el("p", { class: "hint" }, "No fields are defined (an admin defines them)."));
    return form;
  }
  const list = el("dl", { class: "fields" });
  for (const d of defs) {
    const id = `${prefix}-field-${d.name}`;
    const value = values[d.name];
    const error = el("span", { class: "field-error", id: `${id}-error`, role: "alert", dataset: { errorFor: d.name } });
    const flags = [d.personal && "personal", d.required_to_resolve && "required to resolve"].filter(Boolean);
    const label = el("label", { for: id }, fieldLabel(d), flags.length ? el("span", { class: "flags" }, ` (${flags.join(", ")})`) : "");
    let control;
    if (d.personal && ERASED.has(value)) {
      control = el("span", { class: "erased", id, dataset: { field: d.name } }, value); // [erased] or [sealed]
    } else {
      control = fieldControl(d, value, id);
      control.setAttribute("aria-describedby", error.id);
      control.addEventListener("input", () => { form.dataset.dirty = "1"; error.textContent = ""; });
    }
    list.append(el("dt", {}, label), el("dd", { dataset: { fieldRow: d.name } }, control, error));
  }
  const note = el("p", { class: "form-error", role: "alert" });
  form.append(list, el("button", { type: "submit" }, "Save fields"), note);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(async () => {
      clearFieldErrors(form);
      const changed = {};
      for (const d of defs) {
        const control = form.elements.namedItem(d.name);
        if (!control) continue; // erased: nothing to edit
        const value = controlValue(d, control);
        if (value === undefined) { showFieldErrors(form, [{ field: `values.${d.name}`, reason: "not a number" }]); return; }
        const before = present(form.original[d.name]) ? form.original[d.name] : null;
        if (value !== before) changed[d.name] = value;
      }
      if (!Object.keys(changed).length) { note.textContent = "Nothing changed."; return; }
      try {
        await save(changed);
      } catch (exc) {
        if (!shownHere(exc)) throw exc;
        showFieldErrors(form, exc.body && exc.body.errors);
        note.textContent = readable(exc);
      }
    });
  });
  return form;
}

// A refusal of what the agent typed is said beside the control; not signed in, not reachable
// and server errors go to the page's error line (guarded()).
function shownHere(exc) {
  return exc instanceof ApiError && exc.status >= 400 && exc.status < 500 && exc.status !== 401;
}

function readable(exc) {
  const reasons = ((exc.body && exc.body.errors) || []).map((e) => `${e.field}: ${e.reason}`);
  return reasons.length ? `${exc.message}. ${reasons.join("; ")}` : exc.message;
}

function clearFieldErrors(form) {
  for (const node of form.querySelectorAll(".field-error, .form-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

// errors[].field "values.<name>" (a bad value) or "fields.<name>" (required to resolve): said next
// to that field's control. True if some error found its control.
function showFieldErrors(form, errors) {
  let shown = false;
  for (const e of errors || []) {
    const name = String(e.field || "").replace(/^(values|fields)\./, "");
    const slot = [...form.querySelectorAll(".field-error")].find((s) => s.dataset.errorFor === name);
    if (!slot) continue;
    slot.textContent = e.reason;
    const control = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (control) control.setAttribute("aria-invalid", "true");
    shown = true;
  }
  return shown;
}

// Tags as chips, each with its remove button, and a box to add some (comma separated).
// `change({add, remove})` sends them and returns the record's tags now.
function tagsEditor({ tags, prefix, change }) {
  const box = el("div", { class: "tags-editor" });
  const chips = el("ul", { class: "chips", "aria-label": "Tags" });
  const input = el("input", { id: `${prefix}-tag-input`, name: "tag", maxlength: "200", autocomplete: "off" });
  const error = el("span", { class: "field-error", id: `${prefix}-tag-error`, role: "alert" });
  input.setAttribute("aria-describedby", error.id);
  const send = (body) => guarded(async () => {
    error.textContent = "";
    try {
      render(await change(body));
      input.value = "";
    } catch (exc) {
      if (!shownHere(exc)) throw exc;
      error.textContent = readable(exc);
    }
  });
  function render(now) {
    chips.replaceChildren(...(now.length ? now.map((tag) => {
      const remove = el("button", { type: "button", class: "chip-remove", "aria-label": `Remove tag ${tag}` }, "×");
      remove.addEventListener("click", () => send({ add: [], remove: [tag] }));
      return el("li", { class: "chip", dataset: { tag } }, el("span", { class: "chip-text" }, tag), remove);
    }) : [el("li", { class: "empty" }, "no tags")]));
  }
  render(tags);
  const form = el("form", { class: "tag-form row" },
    el("label", { for: input.id }, "Add tags"), input, el("button", { type: "submit" }, "Add"), error);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const add = input.value.split(",").map((t) => t.trim()).filter(Boolean); // "VIP gold" is one tag: vip-gold
    if (add.length) send({ add, remove: [] });
  });
  box.append(chips, form);
  return box;
}

// --- the customer panel ----------------------------------------------------------------------------

function renderCustomerRecords(customer) {
  const id = customer.customer_id;
  const path = `/v1/customers/${encodeURIComponent(id)}`;
  const drawFields = (values) => $("customer-fields").replaceChildren(fieldsForm({
    defs: fieldDefs.intake || [],
    values,
    prefix: "customer",
    save: async (changed) => {
      const now = await api("intake", `${path}/fields`, { method: "PUT", body: { values: changed } });
      if (state.customer === id) drawFields(now.fields);
    },
  }));
  drawFields(customer.fields || {});
  $("customer-tags").replaceChildren(tagsEditor({
    tags: customer.tags || [],
    prefix: "customer",
    change: async (body) => (await api("intake", `${path}/tags`, { method: "POST", body })).tags,
  }));
}

// --- the case panel --------------------------------------------------------------------------------

// Drawn again when the case's fields or the definitions change, unless the agent is editing them.
// The form saves with the version whose fields it shows: a note or a tag added meanwhile moves
// it on, fields changed by someone else do not (the save is refused and the form reloaded).
function renderCaseRecords(node, c, force = false) {
  const defs = caseDefs(c.type);
  const shown = JSON.stringify([defs, c.fields || {}]);
  const holder = node.querySelector(".case-fields");
  const editing = holder.firstElementChild && holder.firstElementChild.dataset.dirty;
  if (shown === holder.dataset.shown && !force) {
    holder.dataset.version = c.version;
  } else if (force || !editing) {
    holder.dataset.shown = shown;
    holder.dataset.version = c.version;
    holder.replaceChildren(fieldsForm({
      defs, values: c.fields || {}, prefix: `case-${c.case_id}`, save: (values) => saveCaseFields(node, c.case_id, values),
    }));
  }
  const tags = JSON.stringify(c.tags || []);
  const tagHolder = node.querySelector(".case-tags");
  if (tags !== tagHolder.dataset.shown) {
    tagHolder.dataset.shown = tags;
    tagHolder.replaceChildren(tagsEditor({
      tags: c.tags || [],
      prefix: `case-${c.case_id}`,
      change: async (body) => {
        const view = await api("case", `/v1/cases/${encodeURIComponent(c.case_id)}/tags`, { method: "POST", body });
        tagHolder.dataset.shown = JSON.stringify(view.tags);
        renderCase(view);
        return view.tags;
      },
    }));
  }
}

async function saveCaseFields(node, caseId, values) {
  const version = node.querySelector(".case-fields").dataset.version;
  try {
    const view = await api("case", `/v1/cases/${encodeURIComponent(caseId)}/fields`,
      { method: "POST", body: { values }, headers: { "If-Match": `"${version}"` } });
    renderCase(view);
    renderCaseRecords(node, view, true);
  } catch (exc) {
    const stale = exc.status === 412 || (exc.status === 409 && exc.body && exc.body.error === "concurrency_conflict");
    if (!stale) throw exc; // fieldsForm says it beside the fields
    // Someone changed the case meanwhile: show it as it is now; the agent decides again.
    const fresh = await api("case", `/v1/cases/${encodeURIComponent(caseId)}`);
    renderCase(fresh);
    renderCaseRecords(node, fresh, true);
    node.querySelector(".case-fields .form-error").textContent =
      `This case changed while you edited it (now version ${fresh.version}): reloaded, your changes were not saved. Check the values and save again.`;
  }
}

// 409 fields_required from a change to resolved: said next to the status control and next to
// each missing field.
function showStatusError(node, exc) {
  const slot = node.querySelector(".status-error");
  slot.textContent = exc.message;
  const form = node.querySelector(".case-fields form");
  if (form && exc.body && exc.body.error === "fields_required") showFieldErrors(form, exc.body.errors);
}
