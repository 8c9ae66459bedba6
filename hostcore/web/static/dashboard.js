// hostcore dashboard: live fragments over server-sent events, modals that post with fetch and
// show control-interface errors inline. Hand-written, no build step.
"use strict";

(function () {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  let selectedHost = "";

  // --- live updates ------------------------------------------------------------------------------

  function setStatus(text, cls) {
    const el = $("#live-status");
    el.textContent = text;
    el.className = "pill " + cls;
  }

  function applyFragments(fragments) {
    for (const [name, html] of Object.entries(fragments)) {
      for (const el of $$(`[data-fragment="${name}"]`)) {
        const keep = el.tagName === "SELECT" ? el.value : null;
        el.innerHTML = html;
        if (keep !== null && $$("option", el).some((o) => o.value === keep)) el.value = keep;
      }
    }
    applyHostFilter();
  }

  function applyHostFilter() {
    const filter = $("#host-filter");
    if (filter && $$("option", filter).every((o) => o.value !== selectedHost)) selectedHost = "";
    if (filter) filter.value = selectedHost;
    for (const row of $$("#hosts-table tbody tr[data-host], #actors-table tbody tr[data-host], #providers-table tbody tr[data-host]")) {
      row.hidden = selectedHost !== "" && row.dataset.host !== selectedHost;
      row.classList.toggle("selected", selectedHost !== "" && row.dataset.host === selectedHost);
    }
  }

  // "live" only while both the page's stream and the dashboard's own NATS connection are up.
  function connect() {
    const source = new EventSource("/api/stream");
    source.addEventListener("state", (msg) => {
      const state = JSON.parse(msg.data);
      document.body.dataset.version = state.version;
      applyFragments(state.fragments);
      if (state.nats_connected) setStatus("live", "status-live");
      else setStatus("NATS down", "status-down");
    });
    source.addEventListener("error", () => setStatus("reconnecting…", "status-down"));
  }

  // --- modals ------------------------------------------------------------------------------------

  function showError(form, text) {
    const box = $(".modal-error", form);
    box.textContent = text;
    box.hidden = !text;
  }

  function fillForm(dialog, fill) {
    for (const [key, value] of Object.entries(fill || {})) {
      const input = $(`[name="${key}"]`, dialog);
      if (input) input.value = value;
      for (const span of $$(`[data-fill-text="${key}"]`, dialog)) span.textContent = value;
    }
  }

  function openModal(id, fill) {
    const dialog = document.getElementById(id);
    const form = $("form", dialog);
    showError(form, "");
    const result = $(".modal-result", form);
    if (result) result.hidden = true;
    fillForm(dialog, fill);
    dialog.showModal();
  }

  function formBody(form) {
    if (form.hasAttribute("data-multipart")) return new FormData(form);
    const body = {};
    for (const [key, value] of new FormData(form).entries()) body[key] = value;
    return JSON.stringify(body);
  }

  async function post(url, body) {
    const headers = typeof body === "string" ? { "Content-Type": "application/json" } : {};
    let reply;
    try {
      reply = await fetch(url, { method: "POST", body, headers, credentials: "same-origin" });
    } catch (err) {
      return { ok: false, error: "The dashboard did not answer: " + err };
    }
    try {
      return await reply.json();
    } catch (err) {
      return { ok: false, error: `HTTP ${reply.status}` };
    }
  }

  async function submit(form, url, body) {
    const button = $('button[type="submit"]', form);
    button.disabled = true;
    form.classList.add("busy");
    showError(form, "");
    try {
      const reply = await post(url, body);
      if (!reply.ok) {
        showError(form, reply.error || "request failed");
        return;
      }
      const result = $(".modal-result", form);
      if (result && reply.response !== undefined) {
        result.textContent = JSON.stringify(reply.response, null, 2);
        result.hidden = false;
      }
      if (!form.hasAttribute("data-keep-open")) form.closest("dialog").close();
    } finally {
      button.disabled = false;
      form.classList.remove("busy");
    }
  }

  let pendingConfirm = null;

  document.addEventListener("click", (ev) => {
    const target = ev.target.closest("[data-open], [data-close], [data-confirm], [data-host-select]");
    if (!target) return;
    ev.preventDefault();
    if (target.hasAttribute("data-open")) {
      openModal(target.dataset.open, target.dataset.fill ? JSON.parse(target.dataset.fill) : null);
    } else if (target.hasAttribute("data-close")) {
      target.closest("dialog").close();
    } else if (target.hasAttribute("data-confirm")) {
      pendingConfirm = { url: target.dataset.action, payload: target.dataset.payload };
      $("#confirm-modal .confirm-text").textContent = target.dataset.confirm;
      openModal("confirm-modal");
    } else {
      selectedHost = selectedHost === target.dataset.hostSelect ? "" : target.dataset.hostSelect;
      applyHostFilter();
    }
  });

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!form.closest("dialog")) return;
    ev.preventDefault();
    if (form.closest("#confirm-modal")) {
      if (pendingConfirm) submit(form, pendingConfirm.url, pendingConfirm.payload);
    } else {
      submit(form, form.dataset.action, formBody(form));
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("#host-filter").addEventListener("change", (ev) => {
      selectedHost = ev.target.value;
      applyHostFilter();
    });
    applyHostFilter();
    connect();
  });
})();
