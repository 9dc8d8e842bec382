/* Integrations Hub console: a dependency-free single-page app (ES2020) served at /console.
 * It talks to /api/v1 only, with `Authorization: Bearer <key>` when a key is kept in
 * sessionStorage (asked for after any 401). API data is only ever inserted as text.
 *
 * Test hooks (data-test). <body data-page="…" data-ready="true|false"> tells which page shows and
 * whether its initial load is done (pages: overview, events, event, subscriptions,
 * subscription-new, subscription, dead-letters, connectors, login, not-found).
 *  global     skip-link, nav-overview, nav-events, nav-subscriptions, nav-dead-letters,
 *             nav-connectors, sign-out, feed-status [data-state=off|connecting|live|reconnecting],
 *             flash [data-kind=info|success|error], loading, page-error, load-more
 *  login      login-form, login-key, login-submit, login-error; body[data-scope=admin|read|publish]
 *             (the key's scope: read hides every control that changes something), scope-refused
 *  forms      field-<name> (inputs), error-<field> (API field errors beside fields), form-error
 *  filters    filter-form, filter-event_type, filter-since, filter-until, filter-subscription_id,
 *             filter-connector, filter-delivery_status (events only), filter-submit, filter-clear
 *  overview   overview-attempts, overview-failure-rate, overview-latency-p95, overview-backlog,
 *             overview-oldest-pending, overview-open-circuits, overview-dead-letters,
 *             overview-connector-problems (figure values, each with data-value), overview-last-failure,
 *             overview-updated, overview-stats-error, overview-connector-problem [data-name] (items)
 *  events     events-table, events-summary, event-row [data-id], event-link, count-<state> [data-count]
 *  event      event-payload, delivery [data-id][data-status], attempts (table), attempt-row
 *             [data-status=succeeded|failed][data-code=HTTP status], attempt-report (what a
 *             connector reported), replay-delivery [data-delivery-id]
 *  subs       new-subscription, subscriptions-table, subscription-row [data-id][data-enabled]
 *             [data-paused], subscription-link, health [data-health=healthy|degraded|failing|open|
 *             half_open|idle|disabled|paused|unknown|loading] ("Paused" whenever an enabled one is)
 *  create     subscription-form, kind-webhook, kind-connector, field-url, field-secret,
 *             generate-secret, field-connector, field-instance, field-events, field-description,
 *             generated-secret-note, field-headers, field-filter (JSON text; error-filter beside it
 *             for bad JSON and for API errors on `filter`, `filter.…`, `filter[…`), field-enabled,
 *             field-paused, field-ordered, field-rate-per-second (empty: no limit), field-rate-burst
 *             (empty: 0), error-rate_limit.per_second / error-rate_limit.burst beside them (bad
 *             numbers, and API errors on `rate_limit.per_second` / `rate_limit.burst`; any other
 *             `rate_limit…` error beside per_second), subscription-submit
 *  sub page   paused-badge (in the heading, only when paused), sub-filter [data-filter=set|none]
 *             (the filter as pretty-printed JSON), sub-ordered [data-ordered] ("Ordered per key" /
 *             "Any order"), sub-rate-limit [data-rate-limit=set|none][data-per-second][data-burst]
 *             ("At most N a second (+B burst)" / "No limit"), sub-stats [data-window], window-1h|24h|7d,
 *             stat-attempts, stat-succeeded, stat-failed, stat-success-rate, stat-latency,
 *             stat-backlog, stat-last-success, stat-last-failure, stat-circuit, enable-toggle
 *             [aria-checked][data-enabled], pause-toggle [aria-pressed][data-paused] ("Pause
 *             deliveries" / "Resume deliveries"), send-test, test-result
 *             [data-succeeded] (with test-status, test-latency, test-error, test-body), sub-transform
 *             [data-transform] (its name, empty for none), transform-card (only with a transform:
 *             transform-event, transform-try, transform-result [data-outcome=deliver|keep|drop|
 *             failed|invalid] with transform-reason, transform-body), rotate-form,
 *             rotate-secret, rotate-generate, rotate-submit, delete-subscription, confirm-dialog,
 *             confirm-delete, confirm-cancel, deliveries-filter, deliveries-status, deliveries-table
 *             [data-loaded-status], delivery-row [data-id][data-status]
 *  edit       (sub page) edit-form [data-kind=webhook|connector], edit-url, edit-headers (webhooks
 *             only), edit-events, edit-filter (pretty-printed; emptied = no filter), edit-description,
 *             edit-rate-per-second, edit-rate-burst (prefilled; emptying per-second removes the
 *             limit), edit-ordered (checkbox), edit-submit, edit-reset; API field errors beside the
 *             fields as error-<field> inside edit-form (error-filter and error-rate_limit.per_second /
 *             .burst as in create), the rest as form-error inside it
 *  dead       dead-letters-table, dead-letter-row [data-id][data-replayed], dead-letter-select
 *             [data-id], dead-letter-select-all, replay-one [data-id], replay-selected, replay-all
 *  connectors connector [data-name][data-status], connector-problem, connector-digest,
 *             connector-hosts, connector-stats, connector-invocations, connector-succeeded,
 *             connector-failed, connector-success-rate, connector-latency
 */
'use strict';

(() => {
  const API = '/api/v1';
  const KEY = 'ih.console.apiKey';
  const STATES = ['pending', 'in_flight', 'succeeded', 'dead', 'cancelled'];
  const LABEL = {
    pending: 'Pending', in_flight: 'In flight', succeeded: 'Succeeded', dead: 'Dead',
    cancelled: 'Cancelled', failed: 'Failed', closed: 'Closed', open: 'Open',
    half_open: 'Half-open', active: 'Active', inactive: 'Inactive', missing: 'Missing',
    paused: 'Paused',
  };
  const TONE = {
    pending: 'info', in_flight: 'info', succeeded: 'ok', dead: 'bad', cancelled: 'muted',
    failed: 'bad', closed: 'ok', open: 'bad', half_open: 'warn', active: 'ok', inactive: 'warn',
    missing: 'warn', paused: 'warn',
  };
  const ICON = { ok: '✓', bad: '✕', warn: '!', info: '•', muted: '–' };

  const body = document.body;
  const main = document.getElementById('main');
  const flashEl = document.getElementById('flash');
  const feedStatusEl = document.getElementById('feed-status');
  const signOutBtn = document.getElementById('sign-out');

  // ---------------------------------------------------------------- DOM helpers

  /** Builds an element; strings become text nodes (never HTML). `on*` functions are listeners. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    let value;
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
      else if (k === 'value') value = v;
      else if (k === 'checked') el.checked = true;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    add(el, children);
    if (value !== undefined) el.value = value;
    return el;
  }

  /** Replaces `el`'s children with `children` (nulls skipped, strings as text). */
  function put(el, ...children) {
    el.replaceChildren();
    return add(el, children);
  }

  function add(el, children) {
    for (const c of [children].flat(Infinity)) {
      if (c == null || c === false || c === '') continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;
  const enc = encodeURIComponent;
  const isAbort = (e) => e && e.name === 'AbortError';

  function tableWrap(label, table) {
    return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
  }

  function select(attrs, options, value) {
    const opts = options.map(([v, l]) => h('option', { value: v }, l));
    return h('select', Object.assign({}, attrs, { value: value || '' }), opts);
  }

  function badge(state, label) {
    const tone = TONE[state] || 'muted';
    return h('span', { class: `badge tone-${tone}`, 'data-state': state },
      h('span', { class: 'badge-icon', 'aria-hidden': 'true' }, ICON[tone]), label || LABEL[state] || state);
  }

  // ---------------------------------------------------------------- formatting

  function fmtTime(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return h('time', { datetime: iso, title: `${iso} (${ago(iso)})` },
      d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }));
  }
  function ago(iso) {
    const s = (Date.now() - new Date(iso).getTime()) / 1000;
    return s < 0 ? 'in the future' : `${fmtAge(s)} ago`;
  }
  function fmtAge(sec) {
    if (sec == null || isNaN(sec)) return '—';
    const s = Math.round(sec);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ''}`.trim();
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }
  const num = (n) => (n == null ? '—' : Number(n).toLocaleString());
  /** A ratio as a percentage, rounded towards `dir` so 99.96 % success never shows as 100 %. */
  function pct(r, dir) {
    if (r == null) return '—';
    const x = r * 1000;
    const v = (dir === 'up' ? Math.ceil(x) : Math.floor(x)) / 10;
    return `${v.toFixed(v % 1 ? 1 : 0)} %`;
  }
  // What a connector reported of an attempt (contract 0.2): its answer, the upstream's id, the delay it asked for.
function reportText(r) {
  const parts = [`connector: ${r.kind}`];
  if (r.external_id) parts.push(`id ${r.external_id}`);
  if (r.retry_after_ms != null) parts.push(`retry after ${ms(r.retry_after_ms)}`);
  return parts.join(' · ');
}

function ms(n) {
    if (n == null) return '—';
    return n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(2)} s`;
  }
  const shortId = (id) => String(id || '').slice(0, 8);
  function sentence(text) {
    let s = String(text || '').trim();
    if (!s) return s;
    s = s[0].toUpperCase() + s.slice(1);
    return /[.!?)]$/.test(s) ? s : `${s}.`;
  }

  function isoToLocal(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return '';
    const p = (n) => String(n).padStart(2, '0');
    const base = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
    return d.getSeconds() ? `${base}:${p(d.getSeconds())}` : base;
  }
  /** A datetime-local value (local time) as RFC 3339 UTC; null when it is not a date. */
  function localToIso(v) {
    if (!v) return '';
    const d = new Date(v);
    return isNaN(d) ? null : d.toISOString().replace(/\.000Z$/, 'Z');
  }

  /** Re-indents JSON text without parsing it, so numbers and key order stay exactly as sent. */
  function prettyJson(text) {
    let out = '';
    let depth = 0;
    let inStr = false;
    let esc = false;
    const nl = () => `\n${'  '.repeat(depth)}`;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inStr) {
        out += c;
        if (esc) esc = false;
        else if (c === '\\') esc = true;
        else if (c === '"') inStr = false;
        continue;
      }
      if (c === '"') { inStr = true; out += c; } else if (c === '{' || c === '[') {
        let j = i + 1;
        while (/\s/.test(text[j] || '')) j++;
        if (text[j] === (c === '{' ? '}' : ']')) { out += c + text[j]; i = j; } else { depth++; out += c + nl(); }
      } else if (c === '}' || c === ']') { depth--; out += nl() + c; } else if (c === ',') out += `,${nl()}`;
      else if (c === ':') out += ': ';
      else if (!/\s/.test(c)) out += c;
    }
    return out;
  }

  /** The raw text of a member of the top-level object of JSON `text`, or null. */
  function rawMember(text, key) {
    let depth = 0;
    let inStr = false;
    let esc = false;
    let start = -1;
    let last = null;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inStr) {
        if (esc) esc = false;
        else if (c === '\\') esc = true;
        else if (c === '"') { inStr = false; last = text.slice(start, i + 1); }
        continue;
      }
      if (c === '"') { inStr = true; start = i; } else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') depth--;
      else if (c === ':' && depth === 1 && last !== null && JSON.parse(last) === key) {
        let d = 0;
        let s = false;
        let e = false;
        let j = i + 1;
        for (; j < text.length; j++) {
          const ch = text[j];
          if (s) {
            if (e) e = false; else if (ch === '\\') e = true; else if (ch === '"') s = false;
            continue;
          }
          if (ch === '"') s = true;
          else if (ch === '{' || ch === '[') d++;
          else if (ch === '}' || ch === ']') { if (d === 0) break; d--; } else if (ch === ',' && d === 0) break;
        }
        return text.slice(i + 1, j).trim();
      }
    }
    return null;
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, title, detail, errors) {
      super(detail ? `${title}: ${detail}` : title);
      this.status = status;
      this.title = title;
      this.detail = detail || '';
      this.errors = errors || [];
    }
  }

  /** JSON text sent as typed inside a request body (big numbers and key order reach the hub exactly). */
  class RawJson {
    constructor(text) { this.text = text; }
  }
  /** A request body as JSON text; top-level RawJson members are inserted verbatim. */
  function bodyText(payload) {
    const entries = payload && typeof payload === 'object' && !Array.isArray(payload) ? Object.entries(payload) : [];
    if (!entries.some(([, v]) => v instanceof RawJson)) return JSON.stringify(payload);
    const members = entries.filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}:${v instanceof RawJson ? v.text : JSON.stringify(v)}`);
    return `{${members.join(',')}}`;
  }

  function getKey() {
    try { return sessionStorage.getItem(KEY) || ''; } catch (_) { return ''; }
  }
  function setKey(k) {
    try { if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY); } catch (_) { /* storage off */ }
    signOutBtn.hidden = !getKey();
  }
  function authHeaders(accept) {
    const headers = { Accept: accept || 'application/json' };
    const k = getKey();
    if (k) headers.Authorization = `Bearer ${k}`;
    return headers;
  }
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v != null && v !== '') p.set(k, String(v));
    const s = p.toString();
    return s ? `?${s}` : '';
  }

  function problemOf(res, text) {
    let p = null;
    try { p = JSON.parse(text); } catch (_) { /* not JSON */ }
    if (p && typeof p === 'object' && (p.title || p.detail)) {
      let errors = p.errors || [];
      if (!Array.isArray(errors)) {
        errors = Object.entries(errors).map(([field, m]) => ({ field, message: [].concat(m).join('; ') }));
      }
      errors = errors.filter((x) => x != null).map((x) => (typeof x === 'object'
        ? { field: x.field == null ? '' : String(x.field), message: x.message == null ? 'is invalid' : String(x.message) }
        : { field: '', message: String(x) }));
      return new ApiError(p.status || res.status, p.title || res.statusText || `HTTP ${res.status}`,
        p.detail == null ? '' : String(p.detail), errors);
    }
    return new ApiError(res.status, res.statusText || `HTTP ${res.status}`, text.slice(0, 300).trim());
  }

  /** Calls the API; answers the parsed JSON (or {data, text} with `raw`), throws ApiError. */
  async function api(method, path, { query, body: payload, signal, raw } = {}) {
    const used = getKey();
    const init = { method, headers: authHeaders(), signal, cache: 'no-store', credentials: 'same-origin' };
    if (payload !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = bodyText(payload);
    }
    let res;
    let text;
    try {
      res = await fetch(API + path + qs(query), init);
      text = await res.text();
    } catch (e) {
      if (isAbort(e)) throw e;
      throw new ApiError(0, 'The hub could not be reached', 'check that it is running and try again');
    }
    if (res.status === 401) {
      if (used === getKey()) unauthorized(used);
      throw problemOf(res, text);
    }
    if (!res.ok) throw problemOf(res, text);
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) {
        throw new ApiError(res.status, 'Unexpected answer', 'the hub answered something that is not JSON');
      }
    }
    return raw ? { data, text } : data;
  }

  // ---------------------------------------------------------------- flash messages

  let flashKeep = false;
  function flash(message, kind = 'info', keep = false) {
    flashEl.dataset.kind = kind;
    put(flashEl, h('p', { class: 'flash-text' }, message));
    flashKeep = keep;
  }
  function clearFlash() {
    put(flashEl);
    delete flashEl.dataset.kind;
  }
  function errorText(e) {
    if (e instanceof ApiError) return e.detail ? `${e.title}: ${e.detail}` : e.title;
    return String((e && e.message) || e || 'Something went wrong');
  }
  function flashError(e) {
    if (isAbort(e) || (e && e.status === 401)) return;
    flash(errorText(e), 'error');
  }
  function pageError(e) {
    return h('div', { class: 'problem', role: 'alert', 'data-test': 'page-error' },
      h('p', { class: 'problem-title' }, e instanceof ApiError ? e.title : 'Something went wrong'),
      h('p', {}, sentence(e instanceof ApiError ? e.detail : errorText(e))),
      e && e.status === 404 ? h('p', {}, h('a', { href: '#/overview' }, 'Back to the overview')) : null);
  }

  // ---------------------------------------------------------------- forms and field errors

  function field(name, label, control, hint) {
    control.id = control.id || nextId(`f-${name}`);
    if (!control.name) control.name = name;
    if (!control.hasAttribute('data-test')) control.setAttribute('data-test', `field-${name}`);
    let hintEl = null;
    if (hint) {
      hintEl = h('p', { class: 'hint', id: `${control.id}-hint` }, hint);
      control.setAttribute('aria-describedby', hintEl.id);
    }
    const isCheck = control.type === 'checkbox';
    return h('div', { class: ['field', isCheck && 'field-check'], 'data-field': name },
      isCheck ? null : h('label', { for: control.id }, label),
      control,
      isCheck ? h('label', { for: control.id }, label) : null,
      hintEl);
  }

  function clearFieldErrors(form) {
    form.querySelectorAll('.field-error, .form-error').forEach((el) => el.remove());
    form.querySelectorAll('[aria-invalid]').forEach((c) => {
      c.removeAttribute('aria-invalid');
      const hint = document.getElementById(`${c.id}-hint`);
      if (hint) c.setAttribute('aria-describedby', hint.id); else c.removeAttribute('aria-describedby');
    });
  }

  function fieldMessage(path, name, message) {
    const m = String(message);
    if (path === name || !path.startsWith(name)) return sentence(m);
    // A filter error names where in the filter: `filter.payload.total.$between` → "payload.total.$between: …".
    if (name === 'filter') return `${path.slice(name.length).replace(/^\./, '')}: ${m}`;
    const sub = path.slice(name.length).replace(/^\./, '');
    if (name === 'headers') return sentence(`${sub} ${m}`);
    if (/^\[\d+\]$/.test(sub)) return sentence(m.startsWith('"') ? m : `item ${Number(sub.slice(1, -1)) + 1}: ${m}`);
    return sentence(`${path}: ${m}`);
  }

  /** The field (data-field) an API error path belongs to: its first segment, except that the
   * rate limit has one per member (`rate_limit.burst`; any other `rate_limit…` goes to per_second). */
  function fieldOfPath(p) {
    if (/^rate_limit(?=$|[.[])/.test(p)) return /^rate_limit\.burst(?=$|[.[])/.test(p) ? 'rate_limit.burst' : 'rate_limit.per_second';
    return p.split(/[.[]/)[0];
  }

  /** Shows each field error beside its field (data-test="error-<field>"), the rest above. */
  function showFieldErrors(form, errors, fieldOf = fieldOfPath) {
    clearFieldErrors(form);
    const rest = [];
    let first = null;
    for (const { field: path, message } of errors) {
      const name = fieldOf(path);
      const wrap = name && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
      if (!wrap) { rest.push(path ? `${path}: ${message}` : sentence(message)); continue; }
      let el = wrap.querySelector('.field-error');
      const control = wrap.querySelector('input, select, textarea');
      if (!el) {
        el = h('div', { class: 'field-error', id: nextId('err'), 'data-test': `error-${name}` });
        wrap.append(el);
        if (control) {
          control.setAttribute('aria-invalid', 'true');
          const prev = control.getAttribute('aria-describedby');
          control.setAttribute('aria-describedby', prev ? `${prev} ${el.id}` : el.id);
        }
      }
      el.append(h('p', {}, fieldMessage(path, name, message)));
      first = first || control;
    }
    if (rest.length) {
      form.prepend(h('div', { class: 'form-error', role: 'alert', 'data-test': 'form-error' },
        rest.map((r) => h('p', {}, r))));
    }
    if (first) first.focus();
  }

  function busy(button, on, label) {
    button.disabled = on;
    button.setAttribute('aria-busy', String(on));
    if (on && label) {
      button.dataset.label = button.textContent;
      button.textContent = label;
    } else if (!on && button.dataset.label) {
      button.textContent = button.dataset.label;
      delete button.dataset.label;
    }
  }

  function randomSecret() {
    const bytes = new Uint8Array(32);
    crypto.getRandomValues(bytes);
    let bin = '';
    bytes.forEach((b) => { bin += String.fromCharCode(b); });
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  /** A secret input with a "Generate" button that fills in a random 32-byte secret and shows it. */
  function secretInput(testPrefix) {
    const input = h('input', { type: 'password', autocomplete: 'new-password', spellcheck: 'false', minlength: '16', maxlength: '256' });
    const note = h('p', { class: 'note', hidden: true, 'data-test': 'generated-secret-note' });
    const gen = h('button', {
      type: 'button', class: 'button', 'data-test': testPrefix ? `${testPrefix}-generate` : 'generate-secret',
      onclick: () => {
        input.value = randomSecret();
        input.type = 'text';
        note.hidden = false;
        note.textContent = 'A random 32-byte secret was generated. Copy it now: the hub never shows a secret again.';
        input.focus();
        input.select();
      },
    }, 'Generate');
    return { input, gen, note };
  }

  function confirmDialog({ title, text, confirmLabel, confirmTest = 'confirm-delete' }) {
    return new Promise((resolve) => {
      const titleId = nextId('dlg');
      const dlg = h('dialog', { class: 'dialog', 'data-test': 'confirm-dialog', 'aria-labelledby': titleId },
        h('form', { method: 'dialog' },
          h('h2', { id: titleId }, title),
          h('p', {}, text),
          h('div', { class: 'actions' },
            h('button', { value: 'cancel', class: 'button', 'data-test': 'confirm-cancel' }, 'Cancel'),
            h('button', { value: 'confirm', class: 'button danger', 'data-test': confirmTest }, confirmLabel))));
      dlg.addEventListener('close', () => { resolve(dlg.returnValue === 'confirm'); dlg.remove(); });
      body.append(dlg);
      if (typeof dlg.showModal === 'function') dlg.showModal();
      else { dlg.remove(); resolve(window.confirm(`${title}\n${text}`)); }
    });
  }

  // ---------------------------------------------------------------- live feed (SSE over fetch)

  function setFeedStatus(state) {
    const text = { off: 'Live updates off', connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' };
    feedStatusEl.dataset.state = state;
    feedStatusEl.textContent = text[state];
  }

  /** Reads a text/event-stream body, calling onMessage(type, data) per message. */
  async function readSse(stream, onChunk, onMessage) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let type = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onChunk();
      buf += decoder.decode(value, { stream: true });
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m || (m[0] === '\r' && m.index === buf.length - 1)) break;
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) onMessage(type || 'message', data.join('\n'));
          type = '';
          data = [];
        } else if (!line.startsWith(':')) {
          const i = line.indexOf(':');
          const name = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
          if (name === 'event') type = val;
          else if (name === 'data') data.push(val);
        }
      }
    }
  }

  const feed = {
    ctrl: null,
    timer: 0,
    retry: 0,
    want: false,
    sync(want) {
      this.want = want;
      if (!want) this.stop();
      else if (!this.ctrl && !this.timer) this.connect();
    },
    stop() {
      this.want = false;
      clearTimeout(this.timer);
      this.timer = 0;
      if (this.ctrl) this.ctrl.abort();
      this.ctrl = null;
      setFeedStatus('off');
    },
    async connect() {
      this.timer = 0;
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      setFeedStatus(this.retry ? 'reconnecting' : 'connecting');
      const used = getKey();
      try {
        const res = await fetch(`${API}/feed`, { headers: authHeaders('text/event-stream'), signal: ctrl.signal, cache: 'no-store' });
        if (res.status === 401 && used === getKey()) {
          unauthorized(used);
          return;
        }
        if (res.ok && res.body) {
          setFeedStatus('live');
          await readSse(res.body, () => { this.retry = 0; }, dispatchFeed);
        }
      } catch (_) { /* the stream broke: reconnect below */ }
      if (this.ctrl !== ctrl || ctrl.signal.aborted) return;
      this.ctrl = null;
      if (!this.want) return;
      const delay = Math.min(30000, 1000 * 2 ** this.retry) * (0.8 + Math.random() * 0.4);
      this.retry = Math.min(this.retry + 1, 5);
      setFeedStatus('reconnecting');
      this.timer = setTimeout(() => this.connect(), delay);
    },
  };

  function dispatchFeed(type, text) {
    if (!current) return;
    let data;
    try { data = JSON.parse(text); } catch (_) { return; }
    for (const fn of current.feed) {
      try { fn(type, data); } catch (_) { /* one handler's failure must not stop the others */ }
    }
  }

  /** Calls fn at most once per `wait` ms (first call at once, the last one never dropped). */
  function throttle(fn, wait) {
    let last = 0;
    let timer = 0;
    const run = () => { timer = 0; last = Date.now(); fn(); };
    const t = () => {
      if (timer) return;
      const due = last + wait - Date.now();
      if (due <= 0) run(); else timer = setTimeout(run, due);
    };
    t.cancel = () => { clearTimeout(timer); timer = 0; };
    return t;
  }

  async function pool(items, n, fn) {
    let i = 0;
    const worker = async () => { while (i < items.length) await fn(items[i++]); };
    await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  }

  // ---------------------------------------------------------------- auth

  let loginShown = false;
  function unauthorized(usedKey) {
    if (loginShown) return;
    setKey('');
    showLogin(usedKey ? 'That API key was not accepted. Enter a valid key.' : '');
  }

  function showLogin(error) {
    loginShown = true;
    navGen++;
    leavePage();
    feed.stop();
    clearFlash();
    body.dataset.auth = 'required';
    body.dataset.page = 'login';
    setNavCurrent('');
    document.title = 'Sign in · Integrations Hub';
    const input = h('input', {
      id: 'login-key', type: 'password', name: 'key', autocomplete: 'current-password',
      required: true, spellcheck: 'false', 'data-test': 'login-key',
    });
    const form = h('form', {
      class: 'card login', 'data-test': 'login-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        const key = input.value.trim();
        if (!key) { input.focus(); return; }
        setKey(key);
        loginShown = false;
        delete body.dataset.auth;
        route(true);
      },
    },
    h('h1', { tabindex: '-1' }, 'Sign in'),
    h('p', {}, 'This hub requires an API key (one of its IH_API_KEYS). The key is kept in this browser tab only, until you sign out or close the tab.'),
    error ? h('p', { class: 'form-error', role: 'alert', 'data-test': 'login-error' }, error) : null,
    h('div', { class: 'field' }, h('label', { for: 'login-key' }, 'API key'), input),
    h('button', { type: 'submit', class: 'button primary', 'data-test': 'login-submit' }, 'Sign in'));
    put(main, form);
    body.dataset.ready = 'true';
    input.focus();
  }

  signOutBtn.addEventListener('click', () => {
    setKey('');
    feed.stop();
    flash('Signed out. The key was removed from this tab.', 'info', true);
    route(true);
  });

  // ---------------------------------------------------------------- router

  const ROUTES = [
    [/^\/overview$/, 'overview', 'Overview', pageOverview],
    [/^\/events$/, 'events', 'Events', pageEvents],
    [/^\/events\/([^/]+)$/, 'event', 'Event', pageEvent],
    [/^\/subscriptions$/, 'subscriptions', 'Subscriptions', pageSubscriptions],
    [/^\/subscriptions\/new$/, 'subscription-new', 'New subscription', pageNewSubscription],
    [/^\/subscriptions\/([^/]+)$/, 'subscription', 'Subscription', pageSubscription],
    [/^\/dead-letters$/, 'dead-letters', 'Dead letters', pageDeadLetters],
    [/^\/connectors$/, 'connectors', 'Connectors', pageConnectors],
  ];
  const FEED_PAGES = new Set(['overview', 'events', 'event']);
  const NAV_OF = { event: 'events', 'subscription-new': 'subscriptions', subscription: 'subscriptions' };

  let navGen = 0;
  let current = null;

  function leavePage() {
    if (!current) return;
    current.ctrl.abort();
    current.cleanups.forEach((fn) => { try { fn(); } catch (_) { /* ignore */ } });
    current = null;
  }

  function setNavCurrent(page) {
    const nav = NAV_OF[page] || page;
    document.querySelectorAll('[data-nav]').forEach((a) => {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
  }

  function parseHash() {
    const raw = location.hash.replace(/^#/, '');
    const q = raw.indexOf('?');
    const path = (q < 0 ? raw : raw.slice(0, q)) || '/overview';
    const query = Object.fromEntries(new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)));
    return { path: path === '/' ? '/overview' : path, query };
  }

  function go(hash) {
    if (location.hash === hash) route(true); else location.hash = hash;
  }

  async function route(focus) {
    const gen = ++navGen;
    leavePage();
    body.dataset.ready = 'false';
    const { path, query } = parseHash();
    let match = null;
    let params = [];
    for (const r of ROUTES) {
      const m = r[0].exec(path);
      if (m) {
        match = r;
        try { params = m.slice(1).map(decodeURIComponent); } catch (_) { params = m.slice(1); }
        break;
      }
    }
    const [, name, title, render] = match || [null, 'not-found', 'Not found', pageNotFound];
    body.dataset.page = name;
    setNavCurrent(name);
    document.title = `${title} · Integrations Hub`;
    if (flashKeep) flashKeep = false; else clearFlash();
    if (!FEED_PAGES.has(name)) feed.stop();
    const ctrl = new AbortController();
    const page = { ctrl, cleanups: [], feed: [] };
    current = page;
    const live = () => gen === navGen;
    const ctx = {
      params,
      query,
      signal: ctrl.signal,
      live,
      render: (...nodes) => { if (live()) put(main, ...nodes.flat().filter(Boolean)); },
      onLeave: (fn) => page.cleanups.push(fn),
      onFeed: (fn) => page.feed.push(fn),
      get: (p, q) => api('GET', p, { query: q, signal: ctrl.signal }),
      send: (method, p, b) => api(method, p, { body: b, signal: ctrl.signal }),
    };
    put(main, h('p', { class: 'loading', 'data-test': 'loading' }, 'Loading…'));
    try {
      // The key's scope decides what is shown: a read key sees no control that changes
      // anything (console.css hides them); a publish key cannot use the console at all.
      const scope = await keyScope(ctx);
      if (!live()) return;
      body.dataset.scope = scope;
      if (scope === 'publish' || (scope === 'read' && name === 'subscription-new')) {
        ctx.render(h('h1', {}, title), h('p', { class: 'problem', role: 'alert', 'data-test': 'scope-refused' },
          scope === 'publish'
            ? 'This API key may only publish events. Sign out and use a read or admin key to use the console.'
            : 'This API key may only read. Creating a subscription needs an admin key.'));
      } else {
        await render(ctx);
      }
    } catch (e) {
      if (!live() || isAbort(e) || (e && e.status === 401)) return;
      ctx.render(h('h1', {}, title), pageError(e));
    }
    if (!live()) return;
    feed.sync(page.feed.length > 0);
    body.dataset.ready = 'true';
    if (focus) {
      const h1 = main.querySelector('h1');
      if (h1) { h1.setAttribute('tabindex', '-1'); h1.focus(); }
    }
  }

  /** The scope of the key in use (`GET /api/v1/key`), asked once per key. */
  let knownScope = null;
  async function keyScope(ctx) {
    const k = getKey();
    if (knownScope && knownScope.key === k) return knownScope.scope;
    const r = await ctx.get('/key');
    knownScope = { key: k, scope: r.scope };
    return r.scope;
  }

  async function pageNotFound(ctx) {
    ctx.render(h('h1', {}, 'Page not found'),
      h('p', {}, 'There is no console page at this address. ', h('a', { href: '#/overview' }, 'Go to the overview'), '.'));
  }

  // ---------------------------------------------------------------- shared pieces

  function fig(test, label, value, raw, tone, note) {
    return h('div', { class: ['figure', tone && `tone-${tone}`] },
      h('dt', {}, label),
      h('dd', { class: 'figure-value', 'data-test': test, 'data-value': raw == null ? '' : String(raw) }, value),
      note ? h('dd', { class: 'figure-note' }, note) : null);
  }
  const rateTone = (r) => (r == null ? null : r >= 0.99 ? 'ok' : r >= 0.9 ? 'warn' : 'bad');

  function lastFailure(f) {
    if (!f) return 'none';
    return h('span', {}, fmtTime(f.at), f.error ? h('span', { class: 'figure-error' }, ` — ${f.error}`) : null);
  }

  /** The figures of a Stats response (subscription, connector), hooks prefixed with `p`. */
  function statsFigures(s, p) {
    const lat = s.latency_ms || s.latency;
    const failed = s.failed != null ? s.failed : s.attempts - s.succeeded;
    const backlog = s.backlog || {};
    return h('dl', { class: 'figures' },
      fig(`${p}-attempts`, 'Attempts', num(s.attempts), s.attempts),
      fig(`${p}-succeeded`, 'Succeeded', num(s.succeeded), s.succeeded),
      fig(`${p}-failed`, 'Failed', num(failed), failed, failed > 0 ? 'bad' : null),
      fig(`${p}-success-rate`, 'Success rate', pct(s.success_rate), s.success_rate, rateTone(s.success_rate),
        s.success_rate == null ? 'no attempts in the window' : null),
      fig(`${p}-latency`, 'Latency p50 / p95 / p99', lat ? `${ms(lat.p50)} / ${ms(lat.p95)} / ${ms(lat.p99)}` : '—',
        lat ? lat.p95 : null, null, lat ? `from ${num(lat.sampled)} attempts` : 'no attempts'),
      fig(`${p}-backlog`, 'Backlog now', num(backlog.pending), backlog.pending, backlog.pending > 0 ? 'info' : null,
        backlog.oldest_pending_age_seconds != null ? `oldest waiting ${fmtAge(backlog.oldest_pending_age_seconds)}` : null),
      fig(`${p}-last-success`, 'Last success', s.last_success_at ? fmtTime(s.last_success_at) : 'never', s.last_success_at),
      fig(`${p}-last-failure`, 'Last failure', lastFailure(s.last_failure), s.last_failure ? s.last_failure.at : null,
        s.last_failure ? 'bad' : null));
  }

  function subTarget(s) {
    return s.url || (s.instance ? `${s.instance.connector} / ${s.instance.name}` : '—');
  }
  function subLabel(s) {
    const t = subTarget(s);
    return s.description ? `${s.description} — ${t}` : t;
  }
  function destLabel(d) {
    if (!d) return '—';
    if (d.kind === 'webhook') return d.url;
    if (d.kind === 'instance') return `${d.connector} / ${d.instance}`;
    if (d.kind === 'connector') return `${d.connector} (connector, default instance)`;
    return d.kind;
  }
  function destNode(d) {
    const label = h('span', { class: d && d.kind === 'webhook' ? 'break' : null }, destLabel(d));
    if (d && d.subscription_id) {
      return h('a', { href: `#/subscriptions/${d.subscription_id}`, title: `Subscription ${d.subscription_id}` }, label);
    }
    return label;
  }

  async function subscriptionOptions(ctx) {
    try {
      const list = await ctx.get('/subscriptions', { limit: 500 });
      return list.data;
    } catch (e) {
      if (isAbort(e) || e.status === 401) throw e;
      return [];
    }
  }
  async function connectorNames(ctx) {
    try {
      const list = await ctx.get('/connectors');
      return list.data.map((c) => c.name);
    } catch (e) {
      if (isAbort(e) || e.status === 401) throw e;
      return [];
    }
  }

  /** The filter form of the events and dead-letter pages; submitting navigates with the query. */
  function filterForm(base, q, subs, conns, withStatus) {
    const withCurrent = (opts, v) => (v && !opts.some(([x]) => x === v) ? opts.concat([[v, v]]) : opts);
    const eventType = h('input', { type: 'text', value: q.event_type || '', placeholder: 'order.created or order.', autocomplete: 'off', spellcheck: 'false', 'data-test': 'filter-event_type' });
    const since = h('input', { type: 'datetime-local', step: '1', value: isoToLocal(q.since), 'data-test': 'filter-since' });
    const until = h('input', { type: 'datetime-local', step: '1', value: isoToLocal(q.until), 'data-test': 'filter-until' });
    const sub = select({ 'data-test': 'filter-subscription_id' },
      withCurrent([['', 'Any subscription']].concat(subs.map((s) => [s.id, subLabel(s)])), q.subscription_id), q.subscription_id);
    const conn = select({ 'data-test': 'filter-connector' },
      withCurrent([['', 'Any connector']].concat(conns.map((n) => [n, n])), q.connector), q.connector);
    const status = withStatus ? select({ 'data-test': 'filter-delivery_status' },
      withCurrent([['', 'Any state']].concat(STATES.map((s) => [s, LABEL[s]])), q.delivery_status), q.delivery_status) : null;
    const form = h('form', {
      class: 'filters', 'data-test': 'filter-form', 'aria-label': 'Filters', novalidate: true,
      onsubmit: (ev) => {
        ev.preventDefault();
        const values = {
          event_type: eventType.value.trim(),
          since: localToIso(since.value),
          until: localToIso(until.value),
          subscription_id: sub.value,
          connector: conn.value,
        };
        if (status) values.delivery_status = status.value;
        const bad = [];
        if (values.since === null) bad.push({ field: 'since', message: 'is not a date and time' });
        if (values.until === null) bad.push({ field: 'until', message: 'is not a date and time' });
        if (bad.length) { showFieldErrors(form, bad); return; }
        go(`#/${base}${qs(values)}`);
      },
    },
    h('div', { class: 'filter-grid' },
      field('event_type', 'Event type', eventType, 'A type, or a prefix ending in . or *'),
      field('since', 'From (your local time)', since),
      field('until', 'Until (your local time)', until),
      field('subscription_id', 'Subscription', sub),
      field('connector', 'Connector', conn),
      status ? field('delivery_status', 'Delivery state', status) : null),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'button primary', 'data-test': 'filter-submit' }, 'Apply filters'),
      h('a', { href: `#/${base}`, class: 'button', 'data-test': 'filter-clear' }, 'Clear')));
    return form;
  }
  function pick(query, keys) {
    const out = {};
    for (const k of keys) if (query[k]) out[k] = query[k];
    return out;
  }

  // ---------------------------------------------------------------- overview

  async function pageOverview(ctx) {
    const figures = h('dl', { class: 'figures' });
    const statsError = h('div', {});
    const problems = h('div', {});
    const updated = h('p', { class: 'muted small', 'data-test': 'overview-updated' });
    ctx.render(
      h('h1', {}, 'Overview'),
      h('section', { 'aria-labelledby': 'ov-deliveries' }, h('h2', { id: 'ov-deliveries' }, 'Deliveries'), figures, statsError, updated),
      h('section', { 'aria-labelledby': 'ov-connectors' }, h('h2', { id: 'ov-connectors' }, 'Connectors needing attention'), problems));

    async function load() {
      const [hour, day, conns] = await Promise.allSettled([
        ctx.get('/stats', { window: '1h' }), ctx.get('/stats', { window: '24h' }), ctx.get('/connectors')]);
      for (const r of [hour, day, conns]) {
        if (r.status === 'rejected' && (isAbort(r.reason) || r.reason.status === 401)) throw r.reason;
      }
      if (!ctx.live()) return;
      const nodes = [];
      if (hour.status === 'fulfilled') {
        const s = hour.value;
        const failure = s.success_rate == null ? null : 1 - s.success_rate;
        const failed = s.failed != null ? s.failed : s.attempts - s.succeeded;
        const lat = s.latency_ms || s.latency;
        const backlog = s.backlog || {};
        nodes.push(
          fig('overview-attempts', 'Deliveries, last hour', num(s.attempts), s.attempts, null, `${num(s.succeeded)} succeeded, ${num(failed)} failed`),
          fig('overview-failure-rate', 'Failure rate, last hour', pct(failure, 'up'), failure,
            failure == null ? null : failure <= 0.01 ? 'ok' : failure <= 0.1 ? 'warn' : 'bad',
            failure == null ? 'no attempts' : null),
          fig('overview-latency-p95', 'Latency p95, last hour', lat ? ms(lat.p95) : '—', lat ? lat.p95 : null),
          fig('overview-backlog', 'Backlog now', num(backlog.pending), backlog.pending, backlog.pending > 0 ? 'info' : null, 'pending or in flight'),
          fig('overview-oldest-pending', 'Oldest pending', fmtAge(backlog.oldest_pending_age_seconds), backlog.oldest_pending_age_seconds),
          fig('overview-open-circuits', 'Open circuits', h('a', { href: '#/subscriptions' }, num(s.open_circuits)), s.open_circuits,
            s.open_circuits > 0 ? 'bad' : 'ok', 'subscriptions left alone after repeated failures'));
      }
      if (day.status === 'fulfilled') {
        const since = new Date(Date.now() - 86400000).toISOString();
        nodes.push(fig('overview-dead-letters', 'Dead letters, last 24 h',
          h('a', { href: `#/dead-letters${qs({ since })}` }, num(day.value.dead_letters)), day.value.dead_letters,
          day.value.dead_letters > 0 ? 'bad' : 'ok'));
      }
      let bad = [];
      if (conns.status === 'fulfilled') {
        bad = conns.value.data.filter((c) => c.status !== 'active');
        nodes.push(fig('overview-connector-problems', 'Connectors with a problem',
          h('a', { href: '#/connectors' }, num(bad.length)), bad.length, bad.length ? 'warn' : 'ok'));
      }
      put(figures, ...nodes);
      const errs = [hour, day].filter((r) => r.status === 'rejected');
      put(statsError, errs.length ? h('div', { class: 'problem', role: 'alert', 'data-test': 'overview-stats-error' },
        h('p', { class: 'problem-title' }, 'Hub figures are unavailable'), h('p', {}, errorText(errs[0].reason))) : '');
      if (hour.status === 'fulfilled' && hour.value.last_failure) {
        put(updated, h('span', { 'data-test': 'overview-last-failure' }, 'Latest failure: ', lastFailure(hour.value.last_failure)), h('br'));
      } else put(updated);
      updated.append(`Updated ${new Date().toLocaleTimeString()}.`);

      if (conns.status === 'rejected') put(problems, pageError(conns.reason));
      else if (!conns.value.data.length) put(problems, h('p', { class: 'muted' }, 'No connectors are loaded or bound.'));
      else if (!bad.length) put(problems, h('p', { class: 'ok-text' }, badge('active', 'All connectors are active')));
      else {
        put(problems, h('ul', { class: 'problem-list' }, bad.map((c) => h('li', { 'data-test': 'overview-connector-problem', 'data-name': c.name },
          h('a', { href: '#/connectors' }, h('strong', {}, c.name)), ' ', badge(c.status), ' ', connectorProblem(c)))));
      }
    }

    await load();
    const refresh = throttle(() => load().catch(() => { /* shown at the next refresh */ }), 2000);
    const every = setInterval(refresh, 30000);
    ctx.onLeave(() => { refresh.cancel(); clearInterval(every); });
    ctx.onFeed(refresh);
  }

  // ---------------------------------------------------------------- events

  function countsCell(c, fresh) {
    const parts = STATES.filter((s) => c && c[s] > 0).map((s) => h('span', { class: `count tone-${TONE[s]}`, 'data-test': `count-${s}`, 'data-count': c[s] },
      h('span', { class: 'badge-icon', 'aria-hidden': 'true' }, ICON[TONE[s]]), `${c[s]} ${LABEL[s].toLowerCase()}`));
    if (parts.length) return h('span', { class: 'counts' }, parts);
    return h('span', { class: 'muted' }, fresh ? 'just published' : 'no deliveries');
  }

  function eventRow(e, fresh) {
    return h('tr', { 'data-test': 'event-row', 'data-id': e.id, class: fresh ? 'is-new' : null },
      h('td', { class: 'nowrap' }, fmtTime(e.created_at)),
      h('td', {}, h('a', { href: `#/events/${e.id}`, 'data-test': 'event-link' }, e.event_type)),
      h('td', { class: 'counts-cell' }, countsCell(e.deliveries, fresh)),
      h('td', { class: 'mono muted', title: e.id }, shortId(e.id)));
  }

  async function pageEvents(ctx) {
    const q = pick(ctx.query, ['event_type', 'since', 'until', 'subscription_id', 'connector', 'delivery_status']);
    const filtered = Object.keys(q).length > 0;
    const [subs, conns] = await Promise.all([subscriptionOptions(ctx), connectorNames(ctx)]);
    const form = filterForm('events', q, subs, conns, true);
    const tbody = h('tbody', {});
    const table = h('table', { 'data-test': 'events-table' },
      h('caption', { class: 'visually-hidden' }, 'Events, newest first'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Published'), h('th', { scope: 'col' }, 'Event type'),
        h('th', { scope: 'col' }, 'Deliveries'), h('th', { scope: 'col' }, 'Id'))),
      tbody);
    const more = h('button', { type: 'button', class: 'button', 'data-test': 'load-more', hidden: true }, 'Load more');
    const summary = h('p', { class: 'muted small', 'data-test': 'events-summary' });
    const results = h('div', {}, tableWrap('Events', table), h('div', { class: 'actions' }, more), summary);
    ctx.render(h('h1', {}, 'Events'), form, results);
    const seen = new Set();
    let cursor = null;

    async function loadPage() {
      let page;
      try {
        page = await ctx.get('/events', Object.assign({ limit: 50, cursor }, q));
      } catch (e) {
        if (isAbort(e) || e.status === 401 || !e.errors || !e.errors.length) throw e;
        showFieldErrors(form, e.errors);
        put(results, pageError(e));
        return;
      }
      for (const e of page.data) {
        if (seen.has(e.id)) continue;
        seen.add(e.id);
        tbody.append(eventRow(e));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!tbody.children.length) {
        tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: '4' }, filtered ? 'No event matches these filters.' : 'No events yet.')));
      }
      summary.textContent = `${seen.size} event${seen.size === 1 ? '' : 's'} shown${cursor ? '; more are available' : ''}.`;
    }
    more.addEventListener('click', async () => {
      busy(more, true, 'Loading…');
      try { await loadPage(); } catch (e) { flashError(e); } finally { busy(more, false); }
    });
    await loadPage();

    // Live: new events at the top (without filters); counts of shown events refreshed.
    const refreshTop = throttle(async () => {
      try {
        const page = await ctx.get('/events', Object.assign({ limit: 50 }, q));
        for (const e of page.data) {
          const row = tbody.querySelector(`tr[data-id="${CSS.escape(e.id)}"]`);
          if (row) put(row.children[2], countsCell(e.deliveries));
        }
      } catch (_) { /* the next message tries again */ }
    }, 2000);
    ctx.onLeave(refreshTop.cancel);
    ctx.onFeed((type, data) => {
      if (type === 'event' && !filtered && !seen.has(data.id)) {
        seen.add(data.id);
        const empty = tbody.querySelector('tr.empty');
        if (empty) empty.remove();
        tbody.prepend(eventRow(data, true));
        refreshTop();
      } else if (type === 'attempt' && seen.has(data.event_id)) refreshTop();
    });
  }

  async function pageEvent(ctx) {
    const id = ctx.params[0];
    const [{ data: ev, text }, attempts] = await Promise.all([
      api('GET', `/events/${enc(id)}`, { signal: ctx.signal, raw: true }),
      ctx.get(`/admin/events/${enc(id)}/attempts`)]);
    const raw = rawMember(text, 'payload');
    const payload = raw ? prettyJson(raw) : JSON.stringify(ev.payload, null, 2);
    const deliveries = h('div', { class: 'stack' });
    ctx.render(
      h('p', { class: 'crumbs' }, h('a', { href: '#/events' }, 'Events'), ' / ', shortId(ev.id)),
      h('h1', {}, 'Event ', h('code', {}, ev.event_type)),
      h('dl', { class: 'meta' },
        h('dt', {}, 'Id'), h('dd', { class: 'mono' }, ev.id),
        h('dt', {}, 'Published'), h('dd', {}, fmtTime(ev.created_at)),
        h('dt', {}, 'Destinations'), h('dd', {}, String(ev.deliveries.length))),
      h('section', { 'aria-labelledby': 'ev-deliveries' }, h('h2', { id: 'ev-deliveries' }, 'Deliveries'), deliveries),
      h('section', { 'aria-labelledby': 'ev-payload' }, h('h2', { id: 'ev-payload' }, 'Payload'),
        h('pre', { class: 'code', tabindex: '0', 'aria-label': 'Payload', 'data-test': 'event-payload' }, payload)));

    function draw(event, list) {
      if (!event.deliveries.length) {
        put(deliveries, h('p', { class: 'muted' }, 'No destination took this event: no enabled subscription or active connector matched its type when it was published.'));
        return;
      }
      put(deliveries, ...event.deliveries.map((d) => deliveryCard(event, d, list.filter((a) => a.delivery_id === d.id))));
    }

    async function reload() {
      const [event, list] = await Promise.all([ctx.get(`/events/${enc(id)}`), ctx.get(`/admin/events/${enc(id)}/attempts`)]);
      if (ctx.live()) draw(event, list.data);
    }

    function deliveryCard(event, d, list) {
      const replay = d.status === 'dead' ? h('button', {
        type: 'button', class: 'button primary', 'data-test': 'replay-delivery', 'data-delivery-id': d.id,
        onclick: async (e) => {
          const btn = e.currentTarget;
          busy(btn, true, 'Replaying…');
          try {
            const dl = await findDeadLetter(ctx, event, d);
            if (!dl) {
              flash('No dead letter waiting for replay was found for this delivery: it may have been replayed already.', 'error');
            } else {
              await ctx.send('POST', `/admin/dead-letters/${dl.id}/replay`);
              flash(`The delivery to ${destLabel(d.destination)} is queued again with a fresh attempt budget.`, 'success');
              await reload();
            }
          } catch (err) { flashError(err); } finally { if (btn.isConnected) busy(btn, false); }
        },
      }, 'Replay') : null;
      const rows = list.map((a) => h('tr', { 'data-test': 'attempt-row', 'data-status': a.outcome, 'data-code': a.response_status == null ? '' : a.response_status },
        h('td', {}, `#${a.attempt}`),
        h('td', { class: 'nowrap' }, fmtTime(a.started_at)),
        h('td', {}, badge(a.outcome), a.report ? h('div', { class: 'muted', 'data-test': 'attempt-report' }, reportText(a.report)) : null),
        h('td', {}, a.response_status == null ? h('span', { class: 'muted' }, 'no answer') : String(a.response_status)),
        h('td', { class: 'nowrap' }, ms(a.duration_ms)),
        h('td', { class: 'error-text' }, a.error || ''),
        h('td', {}, a.response_body ? h('details', {}, h('summary', {}, 'Response'), h('pre', { class: 'code small' }, a.response_body)) : h('span', { class: 'muted' }, '—'))));
      return h('article', { class: 'card', 'data-test': 'delivery', 'data-id': d.id, 'data-status': d.status },
        h('div', { class: 'card-head' },
          h('h3', {}, destNode(d.destination)),
          badge(d.status),
          replay),
        h('p', { class: 'muted small' },
          `${d.attempts} attempt${d.attempts === 1 ? '' : 's'} from the current budget`,
          d.next_attempt_at ? [' · next attempt ', fmtTime(d.next_attempt_at)] : null,
          ' · updated ', fmtTime(d.updated_at)),
        d.last_error ? h('p', { class: 'error-text' }, 'Last error: ', d.last_error) : null,
        list.length ? tableWrap('Attempts', h('table', { class: 'compact', 'data-test': 'attempts' },
          h('thead', {}, h('tr', {}, ['Attempt', 'Started', 'Outcome', 'HTTP status', 'Latency', 'Error', 'Response excerpt'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows))) : h('p', { class: 'muted' }, 'No attempt yet.'));
    }

    draw(ev, attempts.data);
    const refresh = throttle(() => reload().catch(() => { /* retried on the next message */ }), 2000);
    ctx.onLeave(refresh.cancel);
    ctx.onFeed((type, data) => { if (type === 'attempt' && data.event_id === ev.id) refresh(); });
  }

  /** The unreplayed dead letter of delivery `d` (the API has no direct link: filter and match). */
  async function findDeadLetter(ctx, event, d) {
    const q = { event_type: event.event_type, since: event.created_at, limit: 500 };
    if (d.destination.subscription_id) q.subscription_id = d.destination.subscription_id;
    else if (d.destination.connector) q.connector = d.destination.connector;
    let cursor = null;
    for (let i = 0; i < 20; i++) {
      const page = await ctx.get('/admin/dead-letters', Object.assign({}, q, { cursor }));
      const hit = page.data.find((x) => x.delivery_id === d.id && !x.replayed_at);
      if (hit || !page.next_cursor) return hit || null;
      cursor = page.next_cursor;
    }
    return null;
  }

  // ---------------------------------------------------------------- subscriptions

  function healthBadge(sub, stats, failed) {
    const circuit = ((stats && stats.circuit) || sub.circuit || {}).state;
    let health;
    let tone;
    let text;
    const rate = stats ? stats.success_rate : null;
    let title = failed ? errorText(failed) : null;
    if (!sub.enabled) [health, tone, text] = ['disabled', 'muted', sub.paused ? 'Disabled (and paused)' : 'Disabled'];
    else if (sub.paused) {
      // Nothing is attempted while paused: the rate and the circuit say nothing about now.
      [health, tone, text] = ['paused', 'warn', 'Paused'];
      const held = stats && stats.backlog ? stats.backlog.pending : null;
      title = `Deliveries are held until it is resumed${held != null ? ` (${num(held)} waiting)` : ''}`;
    }
    else if (circuit === 'open') [health, tone, text] = ['open', 'bad', 'Circuit open'];
    else if (circuit === 'half_open') [health, tone, text] = ['half_open', 'warn', 'Circuit half-open (probing)'];
    else if (failed) [health, tone, text] = ['unknown', 'muted', 'Unknown'];
    else if (!stats) [health, tone, text] = ['loading', 'muted', 'Loading…'];
    else if (rate == null) [health, tone, text] = ['idle', 'muted', 'No attempts in 24 h'];
    else if (rate >= 0.99) [health, tone, text] = ['healthy', 'ok', 'Healthy'];
    else if (rate >= 0.9) [health, tone, text] = ['degraded', 'warn', 'Degraded'];
    else [health, tone, text] = ['failing', 'bad', 'Failing'];
    const rateText = rate != null && sub.enabled && !sub.paused ? ` · ${pct(rate)} succeeded` : '';
    return h('span', { class: `badge tone-${tone}`, 'data-test': 'health', 'data-health': health, title },
      h('span', { class: 'badge-icon', 'aria-hidden': 'true' }, ICON[tone]), text + rateText);
  }

  async function pageSubscriptions(ctx) {
    const tbody = h('tbody', {});
    const more = h('button', { type: 'button', class: 'button', 'data-test': 'load-more', hidden: true }, 'Load more');
    ctx.render(
      h('div', { class: 'page-head' }, h('h1', {}, 'Subscriptions'),
        h('a', { href: '#/subscriptions/new', class: 'button primary', 'data-test': 'new-subscription' }, 'New subscription')),
      tableWrap('Subscriptions', h('table', { 'data-test': 'subscriptions-table' },
        h('caption', { class: 'visually-hidden' }, 'Subscriptions, oldest first, with their health over 24 hours'),
        h('thead', {}, h('tr', {}, ['Destination', 'Event types', 'Health (24 h)', 'Circuit', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
        tbody)),
      h('div', { class: 'actions' }, more));
    let cursor = null;

    async function loadPage() {
      const page = await ctx.get('/subscriptions', { limit: 100, cursor });
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const rows = page.data.map((s) => {
        const health = h('td', {}, healthBadge(s, null));
        const row = h('tr', { 'data-test': 'subscription-row', 'data-id': s.id, 'data-enabled': String(s.enabled), 'data-paused': String(!!s.paused) },
          h('td', { class: 'dest' }, h('a', { href: `#/subscriptions/${s.id}`, 'data-test': 'subscription-link', class: 'break' }, subTarget(s)),
            s.description ? h('div', { class: 'muted small' }, s.description) : null),
          h('td', {}, s.events.join(', ')),
          health,
          h('td', {}, badge(s.circuit.state), s.circuit.consecutive_failures ? h('div', { class: 'muted small' }, `${s.circuit.consecutive_failures} failures in a row`) : null),
          h('td', { class: 'nowrap' }, fmtTime(s.created_at)));
        return { s, row, health };
      });
      if (!rows.length && !tbody.children.length) {
        tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: '5' }, 'No subscriptions yet. ', h('a', { href: '#/subscriptions/new' }, 'Create one'), '.')));
      }
      tbody.append(...rows.map((r) => r.row));
      await pool(rows, 6, async ({ s, health }) => {
        try {
          const stats = await ctx.get(`/subscriptions/${s.id}/stats`, { window: '24h' });
          put(health, healthBadge(s, stats));
        } catch (e) {
          if (isAbort(e) || e.status === 401) throw e;
          put(health, healthBadge(s, null, e));
        }
      });
    }
    more.addEventListener('click', async () => {
      busy(more, true, 'Loading…');
      try { await loadPage(); } catch (e) { flashError(e); } finally { busy(more, false); }
    });
    await loadPage();
  }

  function parseHeaders(text) {
    const headers = {};
    const errors = [];
    text.split(/\r?\n/).forEach((line, i) => {
      if (!line.trim()) return;
      const at = line.indexOf(':');
      if (at <= 0) errors.push({ field: 'headers', message: `line ${i + 1} is not "Name: value"` });
      else headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    });
    return { headers, errors };
  }
  const splitList = (v) => v.split(',').map((s) => s.trim()).filter(Boolean);

  const FILTER_EXAMPLE = '{"payload.total": {"$gte": 100}}';
  const FILTER_HINT = 'Only matching events are delivered: a JSON object of paths (payload.…, event_type) '
    + 'to values or operators ($eq, $in, $gte, $exists, $or, …).';
  /** The filter text of a form: {raw: JSON text} or {raw: null} (none), or {error}. */
  function parseFilter(text) {
    const raw = text.trim();
    if (!raw) return { raw: null };
    let value;
    try { value = JSON.parse(raw); } catch (e) {
      return { error: `Not valid JSON: ${String(e.message || e).replace(/^JSON\.parse: /, '')}` };
    }
    return { raw: value === null ? null : raw };
  }

  const RATE_PER_SECOND_HINT = 'Deliveries a second, 1 to 10000, across all instances. Empty: no limit (the burst is then ignored).';
  const RATE_BURST_HINT = 'Extra deliveries allowed at once after a quiet spell, 0 to 10000. Empty: 0.';
  const ORDERED_HINT = 'Events sharing an ordering_key are delivered one at a time, in publish order.';
  /** The two rate-limit inputs of a form (field-… or edit-… data-test). */
  function rateInputs(testPrefix) {
    const attrs = { type: 'number', step: '1', inputmode: 'numeric', autocomplete: 'off' };
    return {
      perSecond: h('input', Object.assign({ min: '1', max: '10000', placeholder: 'No limit', 'data-test': `${testPrefix}-rate-per-second` }, attrs)),
      burst: h('input', Object.assign({ min: '0', max: '10000', placeholder: '0', 'data-test': `${testPrefix}-rate-burst` }, attrs)),
    };
  }
  function rateFields(rate, legend) {
    return h('fieldset', { class: 'group' }, h('legend', {}, legend),
      h('div', { class: 'field-row' },
        field('rate_limit.per_second', 'At most, per second', rate.perSecond, RATE_PER_SECOND_HINT),
        field('rate_limit.burst', 'Burst', rate.burst, RATE_BURST_HINT)));
  }
  /** A whole-number input: {value: n}, {value: null} (empty) or {error}. The range is the hub's to check. */
  function wholeNumber(input) {
    const v = input.value.trim();
    if (!v) return input.validity && input.validity.badInput ? { error: 'must be a whole number' } : { value: null };
    return /^\d+$/.test(v) ? { value: Number(v) } : { error: 'must be a whole number' };
  }
  /** The rate limit of two inputs: {limit: {per_second, burst}}, {limit: null} (no limit) or errors. */
  function parseRateLimit(rate) {
    const p = wholeNumber(rate.perSecond);
    if (p.error) return { errors: [{ field: 'rate_limit.per_second', message: p.error }] };
    if (p.value == null) return { limit: null, errors: [] };
    const b = wholeNumber(rate.burst);
    if (b.error) return { errors: [{ field: 'rate_limit.burst', message: b.error }] };
    return { limit: { per_second: p.value, burst: b.value == null ? 0 : b.value }, errors: [] };
  }

  async function pageNewSubscription(ctx) {
    const conns = await ctx.get('/connectors').then((l) => l.data, (e) => {
      if (isAbort(e) || e.status === 401) throw e;
      return [];
    });
    const kindWebhook = h('input', { type: 'radio', name: 'kind', value: 'webhook', id: nextId('kind'), checked: true, 'data-test': 'kind-webhook' });
    const kindConnector = h('input', { type: 'radio', name: 'kind', value: 'connector', id: nextId('kind'), 'data-test': 'kind-connector' });
    const url = h('input', { type: 'text', inputmode: 'url', autocomplete: 'url', spellcheck: 'false', placeholder: 'https://example.com/webhooks' });
    const secret = secretInput();
    const headers = h('textarea', { rows: '3', spellcheck: 'false', placeholder: 'X-Team: ops' });
    const connector = select({}, [['', 'Choose a connector']].concat(conns.map((c) => [c.name, `${c.name} (${LABEL[c.status] || c.status})`])), '');
    const instance = select({}, [['', 'Choose a connector first']], '');
    const events = h('input', { type: 'text', spellcheck: 'false', autocomplete: 'off', placeholder: 'order.created, order.paid' });
    const description = h('textarea', { rows: '2', maxlength: '1024' });
    const filterText = h('textarea', { rows: '4', spellcheck: 'false', autocomplete: 'off', placeholder: FILTER_EXAMPLE });
    const enabled = h('input', { type: 'checkbox', checked: true });
    const paused = h('input', { type: 'checkbox' });
    const ordered = h('input', { type: 'checkbox' });
    const rate = rateInputs('field');
    const submit = h('button', { type: 'submit', class: 'button primary', 'data-test': 'subscription-submit' }, 'Create subscription');

    const webhookSet = h('fieldset', { class: 'group' }, h('legend', {}, 'Webhook'),
      field('url', 'URL', url, 'Absolute http(s) URL that receives the events, without user:password@.'),
      h('div', { class: 'field', 'data-field': 'secret' },
        h('label', { for: (secret.input.id = nextId('f-secret')) }, 'Signing secret'),
        h('div', { class: 'inline' }, Object.assign(secret.input, { name: 'secret' }), secret.gen),
        h('p', { class: 'hint', id: `${secret.input.id}-hint` }, '16 to 256 characters, or empty: the hub then generates one and shows it once. Used to sign every delivery; never shown again.'),
        secret.note),
      field('headers', 'Custom headers (optional)', headers, 'One per line, as Name: value. Sent with every delivery.'));
    secret.input.setAttribute('data-test', 'field-secret');
    secret.input.setAttribute('aria-describedby', `${secret.input.id}-hint`);
    const connectorSet = h('fieldset', { class: 'group', hidden: true }, h('legend', {}, 'Connector instance'),
      field('connector', 'Connector', connector),
      field('instance', 'Instance', instance, 'Instances are created with POST /api/v1/connectors/{name}/instances.'));

    connector.addEventListener('change', async () => {
      put(instance, h('option', { value: '' }, connector.value ? 'Loading…' : 'Choose a connector first'));
      if (!connector.value) return;
      try {
        const list = await ctx.get(`/connectors/${enc(connector.value)}/instances`);
        const opts = list.data.length ? [['', 'Choose an instance']].concat(list.data.map((i) => [i.name, i.name])) : [['', 'This connector has no instances']];
        put(instance, ...opts.map(([v, l]) => h('option', { value: v }, l)));
      } catch (e) {
        put(instance, h('option', { value: '' }, 'Could not load instances'));
        flashError(e);
      }
    });
    const kindChanged = () => {
      webhookSet.hidden = !kindWebhook.checked;
      connectorSet.hidden = kindWebhook.checked;
    };
    kindWebhook.addEventListener('change', kindChanged);
    kindConnector.addEventListener('change', kindChanged);

    const form = h('form', {
      class: 'card form', 'data-test': 'subscription-form', novalidate: true,
      onsubmit: async (ev) => {
        ev.preventDefault();
        const payload = { events: splitList(events.value), enabled: enabled.checked };
        const errors = [];
        if (description.value.trim()) payload.description = description.value.trim();
        if (kindWebhook.checked) {
          if (url.value.trim()) payload.url = url.value.trim();
          if (secret.input.value) payload.secret = secret.input.value;
          const parsed = parseHeaders(headers.value);
          errors.push(...parsed.errors);
          payload.headers = parsed.headers;
        } else {
          payload.connector = { name: connector.value, instance: instance.value };
        }
        const f = parseFilter(filterText.value);
        if (f.error) errors.push({ field: 'filter', message: f.error });
        else if (f.raw != null) payload.filter = new RawJson(f.raw);
        if (paused.checked) payload.paused = true;
        if (ordered.checked) payload.ordered = true;
        const r = parseRateLimit(rate);
        errors.push(...r.errors);
        if (r.limit) payload.rate_limit = r.limit;
        if (errors.length) { showFieldErrors(form, errors); return; }
        busy(submit, true, 'Creating…');
        try {
          const created = await ctx.send('POST', '/subscriptions', payload);
          if (created.secret) {
            // Generated by the hub, returned this once: shown until the operator moves on.
            flashEl.dataset.kind = 'success';
            put(flashEl, h('p', { class: 'flash-text' }, 'Subscription created. Its generated signing secret, shown this once — copy it now: ',
              h('code', { 'data-test': 'created-secret' }, created.secret)));
            flashKeep = true;
          } else flash('Subscription created.', 'success', true);
          go(`#/subscriptions/${created.id}`);
        } catch (e) {
          if (isAbort(e) || e.status === 401) return;
          if (e.errors && e.errors.length) {
            showFieldErrors(form, e.errors, (p) => (p === 'connector.instance' ? 'instance' : fieldOfPath(p)));
          } else clearFieldErrors(form);
          flashError(e);
        } finally { busy(submit, false); }
      },
    },
    h('fieldset', { class: 'choice' }, h('legend', {}, 'Deliver to'),
      h('label', { for: kindWebhook.id }, kindWebhook, ' A webhook URL'),
      h('label', { for: kindConnector.id }, kindConnector, ' A connector instance')),
    webhookSet,
    connectorSet,
    field('events', 'Event types', events, 'Comma-separated, e.g. order.created, order.paid — or * for every event type.'),
    field('filter', 'Payload filter (JSON, optional)', filterText, `${FILTER_HINT} Empty: every event of its types.`),
    field('description', 'Description (optional)', description),
    rateFields(rate, 'Rate limit (optional)'),
    field('enabled', 'Enabled: deliver events as soon as it is created', enabled),
    field('paused', 'Paused: create its deliveries but hold them until it is resumed', paused),
    field('ordered', 'Keep publish order per ordering key', ordered, ORDERED_HINT),
    h('div', { class: 'actions' }, submit, h('a', { href: '#/subscriptions', class: 'button' }, 'Cancel')));

    ctx.render(h('p', { class: 'crumbs' }, h('a', { href: '#/subscriptions' }, 'Subscriptions'), ' / new'),
      h('h1', {}, 'New subscription'), form);
  }

  async function pageSubscription(ctx) {
    const id = ctx.params[0];
    let filterRaw = null; // the filter as the hub sent it (JSON text, numbers exact), or null
    /** Reads or patches the subscription, keeping the raw text of its filter. */
    async function subCall(method, payload) {
      const { data, text } = await api(method, `/subscriptions/${enc(id)}`, { body: payload, signal: ctx.signal, raw: true });
      filterRaw = data.filter == null ? null : (rawMember(text, 'filter') || JSON.stringify(data.filter));
      return data;
    }
    let sub = await subCall('GET');
    const heading = h('h1', {});
    const meta = h('dl', { class: 'meta' });
    const toggle = h('button', { type: 'button', role: 'switch', class: 'switch', 'data-test': 'enable-toggle' });
    const pauseHint = h('p', { class: 'muted small', id: nextId('pause-hint') },
      'Pause holds its deliveries (none attempted, none lost) until resumed; disable drops what is published meanwhile.');
    const pauseBtn = h('button', { type: 'button', class: 'button', 'data-test': 'pause-toggle', 'aria-describedby': pauseHint.id });
    toggle.setAttribute('aria-describedby', pauseHint.id);
    const statsBox = h('div', { 'data-test': 'sub-stats' });
    let windowSel = '24h';
    const windowBtns = ['1h', '24h', '7d'].map((w) => h('button', {
      type: 'button', class: 'button small', 'data-test': `window-${w}`, 'data-window': w,
      onclick: () => { windowSel = w; loadStats().catch(flashError); },
    }, { '1h': 'Last hour', '24h': 'Last 24 hours', '7d': 'Last 7 days' }[w]));

    function drawHead() {
      const pausedBadge = sub.paused ? badge('paused', 'Paused') : null;
      if (pausedBadge) {
        pausedBadge.setAttribute('data-test', 'paused-badge');
        pausedBadge.title = 'Deliveries are created and held until it is resumed';
      }
      put(heading, sub.description || subTarget(sub), ' ',
        sub.enabled ? badge('active', 'Enabled') : badge('cancelled', 'Disabled'), pausedBadge ? ' ' : null, pausedBadge);
      put(meta, 
        h('dt', {}, 'Id'), h('dd', { class: 'mono' }, sub.id),
        h('dt', {}, sub.url ? 'URL' : 'Connector instance'), h('dd', { class: 'break' }, subTarget(sub)),
        h('dt', {}, 'Event types'), h('dd', {}, sub.events.join(', ')),
        h('dt', {}, 'Payload filter'), h('dd', { 'data-test': 'sub-filter', 'data-filter': filterRaw ? 'set' : 'none' },
          filterRaw ? h('pre', { class: 'code small' }, prettyJson(filterRaw)) : h('span', { class: 'muted' }, 'every event of its types')),
        h('dt', {}, 'Order'), h('dd', { 'data-test': 'sub-ordered', 'data-ordered': String(!!sub.ordered) },
          sub.ordered ? 'Ordered per key' : 'Any order'),
        h('dt', {}, 'Rate limit'), sub.rate_limit
          ? h('dd', { 'data-test': 'sub-rate-limit', 'data-rate-limit': 'set', 'data-per-second': sub.rate_limit.per_second, 'data-burst': sub.rate_limit.burst || 0 },
            `At most ${sub.rate_limit.per_second} a second (+${sub.rate_limit.burst || 0} burst)`)
          : h('dd', { 'data-test': 'sub-rate-limit', 'data-rate-limit': 'none' }, 'No limit'),
        h('dt', {}, 'Transform'), sub.transform
          ? h('dd', { 'data-test': 'sub-transform', 'data-transform': sub.transform.name },
            h('span', { class: 'mono' }, sub.transform.name),
            Object.keys(sub.transform.settings || {}).length
              ? ` (${Object.entries(sub.transform.settings).map(([k, v]) => `${k}=${v}`).join(', ')})` : '')
          : h('dd', { 'data-test': 'sub-transform', 'data-transform': '' }, h('span', { class: 'muted' }, 'none: the hub\'s own body')),
        h('dt', {}, 'Custom headers'), h('dd', {}, Object.keys(sub.headers || {}).length
          ? h('ul', { class: 'plain' }, Object.entries(sub.headers).map(([k, v]) => h('li', { class: 'mono' }, `${k}: ${v}`))) : 'none'),
        h('dt', {}, 'Circuit'), h('dd', {}, badge(sub.circuit.state), sub.circuit.consecutive_failures ? ` ${sub.circuit.consecutive_failures} consecutive failures` : ''),
        h('dt', {}, 'Created'), h('dd', {}, fmtTime(sub.created_at)),
        h('dt', {}, 'Updated'), h('dd', {}, fmtTime(sub.updated_at)));
      toggle.setAttribute('aria-checked', String(sub.enabled));
      toggle.dataset.enabled = String(sub.enabled);
      put(toggle, h('span', { class: 'switch-track', 'aria-hidden': 'true' }, h('span', { class: 'switch-knob' })),
        h('span', {}, 'Deliveries enabled'));
      pauseBtn.setAttribute('aria-pressed', String(!!sub.paused));
      pauseBtn.dataset.paused = String(!!sub.paused);
      pauseBtn.textContent = sub.paused ? 'Resume deliveries' : 'Pause deliveries';
    }

    async function loadStats() {
      statsBox.setAttribute('aria-busy', 'true');
      windowBtns.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.window === windowSel)));
      const w = windowSel;
      const s = await ctx.get(`/subscriptions/${enc(id)}/stats`, { window: w });
      if (w !== windowSel) return;
      const circuit = s.circuit || sub.circuit;
      put(statsBox, statsFigures(s, 'stat'), h('dl', { class: 'figures' },
        fig('stat-circuit', 'Circuit', badge(circuit.state), circuit.state, null,
          circuit.consecutive_failures ? `${circuit.consecutive_failures} failures in a row` : 'no failures in a row')));
      statsBox.dataset.window = w;
      statsBox.setAttribute('aria-busy', 'false');
    }

    toggle.addEventListener('click', async () => {
      busy(toggle, true);
      try {
        sub = await subCall('PATCH', { enabled: !sub.enabled });
        drawHead();
        flash(sub.enabled ? 'Subscription enabled: matching events are delivered again.' : 'Subscription disabled: new events are not delivered to it.', 'success');
      } catch (e) { flashError(e); } finally { busy(toggle, false); }
    });

    pauseBtn.addEventListener('click', async () => {
      busy(pauseBtn, true);
      try {
        sub = await subCall('PATCH', { paused: !sub.paused });
        if (!ctx.live()) return;
        drawHead();
        flash(sub.paused ? 'Subscription paused: deliveries are held until resumed.' : 'Subscription resumed: held deliveries are due now.', 'success');
      } catch (e) { flashError(e); } finally {
        busy(pauseBtn, false);
        // A button that got disabled while focused loses the focus: give it back.
        if (ctx.live() && (!document.activeElement || document.activeElement === body)) pauseBtn.focus();
      }
    });

    // Send a test event.
    const testResult = h('div', { class: 'test-result', 'aria-live': 'polite' });
    const testBtn = h('button', {
      type: 'button', class: 'button', 'data-test': 'send-test',
      onclick: async () => {
        busy(testBtn, true, 'Sending…');
        put(testResult);
        try {
          const r = await ctx.send('POST', `/subscriptions/${enc(id)}/test`);
          put(testResult, h('div', { class: 'card', 'data-test': 'test-result', 'data-succeeded': String(r.succeeded) },
            h('p', {}, r.succeeded ? badge('succeeded', 'Delivered') : badge('failed', 'Not delivered'),
              ` ${r.event_type} event ${shortId(r.event_id)}`),
            h('dl', { class: 'meta' },
              h('dt', {}, 'HTTP status'), h('dd', { 'data-test': 'test-status' }, r.response_status == null ? 'no answer' : String(r.response_status)),
              h('dt', {}, 'Latency'), h('dd', { 'data-test': 'test-latency' }, ms(r.duration_ms)),
              h('dt', {}, 'Error'), h('dd', { class: r.error ? 'error-text' : null, 'data-test': 'test-error' }, r.error || 'none'),
              h('dt', {}, 'Response excerpt'), h('dd', {}, r.response_body
                ? h('pre', { class: 'code small', 'data-test': 'test-body' }, r.response_body) : 'empty'))));
        } catch (e) { flashError(e); } finally { busy(testBtn, false); }
      },
    }, 'Send test event');

    // Try the subscription's transform on an event (a dry run: nothing is sent or stored).
    const tryResult = h('div', { class: 'test-result', 'aria-live': 'polite' });
    const tryEvent = h('textarea', {
      class: 'code', rows: '5', 'data-test': 'transform-event', id: nextId('f-try'),
      spellcheck: 'false',
    });
    tryEvent.value = JSON.stringify({ event_type: sub.events[0] === '*' ? 'example.event' : sub.events[0], payload: {} }, null, 2);
    const tryBtn = h('button', {
      type: 'button', class: 'button', 'data-test': 'transform-try',
      onclick: async () => {
        if (!sub.transform) return;
        let event;
        try { event = JSON.parse(tryEvent.value); } catch (e) {
          put(tryResult, h('p', { class: 'error-text', 'data-test': 'transform-result', 'data-outcome': 'invalid' }, `Not JSON: ${e.message}`));
          return;
        }
        busy(tryBtn, true, 'Running…');
        put(tryResult);
        try {
          const r = await ctx.send('POST', `/transforms/${enc(sub.transform.name)}/test`, { event, subscription_id: sub.id });
          const shown = r.body != null ? r.body : r.body_base64;
          put(tryResult, h('div', { class: 'card', 'data-test': 'transform-result', 'data-outcome': r.outcome },
            h('p', {}, { deliver: badge('succeeded', 'Would send'), keep: badge('succeeded', 'Would send the hub\'s body'),
              drop: badge('cancelled', 'Would drop'), failed: badge('failed', 'Would fail') }[r.outcome] || r.outcome,
              ` in ${ms(r.duration_ms)}`),
            r.reason ? h('p', { class: r.outcome === 'failed' ? 'error-text' : 'muted', 'data-test': 'transform-reason' }, r.reason) : null,
            shown != null ? h('dl', { class: 'meta' },
              h('dt', {}, 'Content type'), h('dd', { class: 'mono' }, r.content_type || ''),
              h('dt', {}, 'Headers'), h('dd', {}, Object.keys(r.headers || {}).length
                ? h('ul', { class: 'plain' }, Object.entries(r.headers).map(([k, v]) => h('li', { class: 'mono' }, `${k}: ${v}`))) : 'none'),
              h('dt', {}, r.body != null ? 'Body' : 'Body (base64)'),
              h('dd', {}, h('pre', { class: 'code small', 'data-test': 'transform-body' }, r.body != null ? prettyJson(shown) : shown))) : null));
        } catch (e) { flashError(e); } finally { busy(tryBtn, false); }
      },
    }, 'Run the transform');
    const tryCard = sub.transform
      ? h('div', { class: 'card', 'data-test': 'transform-card' }, h('h3', {}, 'Transform'),
        h('p', { class: 'muted small' }, 'Runs the transform on this event as a delivery would; nothing is sent or stored.'),
        h('label', { for: tryEvent.id }, 'Event'), tryEvent, tryBtn, tryResult)
      : null;

    // Rotate the secret (webhooks only).
    let rotate;
    if (sub.url) {
      const secret = secretInput('rotate');
      secret.input.setAttribute('data-test', 'rotate-secret');
      const submit = h('button', { type: 'submit', class: 'button primary', 'data-test': 'rotate-submit' }, 'Rotate secret');
      rotate = h('form', {
        class: 'form', 'data-test': 'rotate-form', novalidate: true,
        onsubmit: async (ev) => {
          ev.preventDefault();
          busy(submit, true, 'Rotating…');
          try {
            sub = await subCall('PATCH', { secret: secret.input.value });
            drawHead();
            clearFieldErrors(rotate);
            secret.input.value = '';
            secret.input.type = 'password';
            secret.note.hidden = true;
            flash('Secret rotated. Deliveries are signed with the new secret; the previous one stays valid for 24 hours.', 'success');
          } catch (e) {
            if (e.errors && e.errors.length) showFieldErrors(rotate, e.errors);
            flashError(e);
          } finally { busy(submit, false); }
        },
      },
      h('div', { class: 'field', 'data-field': 'secret' },
        h('label', { for: (secret.input.id = nextId('f-rotate')) }, 'New secret'),
        h('div', { class: 'inline' }, secret.input, secret.gen, submit),
        h('p', { class: 'hint' }, '16 to 256 characters. The previous secret stays valid for 24 hours.'),
        secret.note));
    } else {
      rotate = h('p', { class: 'muted' }, 'Deliveries to a connector instance are not signed: there is no secret to rotate.');
    }

    // Edit: PATCH with only the fields that changed. A connector-instance subscription has no
    // URL, secret or headers (PATCH refuses them for it with 422), so only its events, filter,
    // description, rate limit and ordering are offered; enabling and pausing are above, the secret
    // is rotated above. The filter is sent as typed (RawJson) so large numbers reach the hub exactly.
    const webhook = !sub.instance;
    const headerLines = (hs) => Object.entries(hs || {}).map(([k, v]) => `${k}: ${v}`).join('\n');
    const sameHeaders = (a, b) => {
      const norm = (hs) => JSON.stringify(Object.entries(hs || {}).map(([k, v]) => [k.toLowerCase(), v])
        .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
      return norm(a) === norm(b);
    };
    const edit = {
      url: webhook ? h('input', { type: 'text', inputmode: 'url', autocomplete: 'off', spellcheck: 'false', 'data-test': 'edit-url', placeholder: 'https://example.com/webhooks' }) : null,
      headers: webhook ? h('textarea', { rows: '3', spellcheck: 'false', 'data-test': 'edit-headers', placeholder: 'X-Team: ops' }) : null,
      events: h('input', { type: 'text', spellcheck: 'false', autocomplete: 'off', 'data-test': 'edit-events', placeholder: 'order.created, order.paid' }),
      filter: h('textarea', { rows: '4', spellcheck: 'false', autocomplete: 'off', 'data-test': 'edit-filter', placeholder: FILTER_EXAMPLE }),
      // A one-line input (Enter saves) unless the description already has line breaks.
      description: /[\r\n]/.test(sub.description || '')
        ? h('textarea', { rows: '3', maxlength: '1024', 'data-test': 'edit-description' })
        : h('input', { type: 'text', maxlength: '1024', autocomplete: 'off', 'data-test': 'edit-description' }),
      ordered: h('input', { type: 'checkbox', 'data-test': 'edit-ordered' }),
    };
    const editRate = rateInputs('edit');
    edit.ratePerSecond = editRate.perSecond;
    edit.rateBurst = editRate.burst;
    const editValue = (c) => (c.type === 'checkbox' ? c.checked : c.value);
    let editInitial = {};
    /** Fills the edit form from `sub`; what the browser shows is what counts as unchanged. */
    function fillEdit() {
      const values = {
        url: sub.url || '', headers: headerLines(sub.headers), events: sub.events.join(', '),
        filter: filterRaw ? prettyJson(filterRaw) : '', description: sub.description || '',
        ordered: !!sub.ordered,
        ratePerSecond: sub.rate_limit ? String(sub.rate_limit.per_second) : '',
        rateBurst: sub.rate_limit ? String(sub.rate_limit.burst || 0) : '',
      };
      editInitial = {};
      for (const [k, control] of Object.entries(edit)) {
        if (!control) continue;
        if (control.type === 'checkbox') control.checked = values[k]; else control.value = values[k];
        editInitial[k] = editValue(control);
      }
      if (edit.headers) edit.headers.rows = Math.min(12, Math.max(3, Object.keys(sub.headers || {}).length + 1));
      edit.filter.rows = Math.min(16, Math.max(4, edit.filter.value.split('\n').length + 1));
    }
    /** The PATCH body (changed fields only) and any errors found before sending. */
    function editChanges() {
      const patch = {};
      const errors = [];
      const touched = (k) => edit[k] && editValue(edit[k]) !== editInitial[k];
      if (touched('url')) {
        const v = edit.url.value.trim();
        if (!v) errors.push({ field: 'url', message: 'is required: the absolute http(s) URL that receives the events' });
        else if (v !== (sub.url || '')) patch.url = v;
      }
      if (touched('headers')) {
        const parsed = parseHeaders(edit.headers.value);
        if (parsed.errors.length) errors.push(...parsed.errors);
        else if (!sameHeaders(parsed.headers, sub.headers)) patch.headers = parsed.headers;
      }
      if (touched('events')) {
        const v = splitList(edit.events.value);
        if (!v.length) errors.push({ field: 'events', message: 'must list at least one event type, or * for every event type' });
        else if (JSON.stringify(v) !== JSON.stringify(sub.events)) patch.events = v;
      }
      if (touched('filter')) {
        const f = parseFilter(edit.filter.value);
        if (f.error) errors.push({ field: 'filter', message: f.error });
        else if (f.raw == null) { if (filterRaw != null) patch.filter = null; } // null removes it
        else if (filterRaw == null || prettyJson(f.raw) !== prettyJson(filterRaw)) patch.filter = new RawJson(f.raw);
      }
      if (touched('description')) {
        const v = edit.description.value.trim() || null;
        if (v !== (sub.description == null ? null : sub.description)) patch.description = v; // null clears it
      }
      const badRate = editRate.perSecond.validity.badInput || editRate.burst.validity.badInput;
      if (touched('ratePerSecond') || touched('rateBurst') || badRate) {
        const r = parseRateLimit(editRate);
        const was = sub.rate_limit || null;
        if (r.errors.length) errors.push(...r.errors);
        else if (r.limit == null) { if (was) patch.rate_limit = null; } // null removes it
        else if (!was || was.per_second !== r.limit.per_second || (was.burst || 0) !== r.limit.burst) patch.rate_limit = r.limit;
      }
      if (touched('ordered') && edit.ordered.checked !== !!sub.ordered) patch.ordered = edit.ordered.checked;
      return { patch, errors };
    }
    const editSubmit = h('button', { type: 'submit', class: 'button primary', 'data-test': 'edit-submit' }, 'Save changes');
    const editReset = h('button', {
      type: 'button', class: 'button', 'data-test': 'edit-reset',
      onclick: () => { fillEdit(); clearFieldErrors(editForm); },
    }, 'Undo changes');
    const editForm = h('form', {
      class: 'card form', 'data-test': 'edit-form', 'data-kind': webhook ? 'webhook' : 'connector', novalidate: true,
      'aria-labelledby': 'sub-edit-h',
      onkeydown: (ev) => {
        // Enter saves from one-line inputs (the browser does it); in a text area Ctrl/⌘+Enter does.
        if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && ev.target instanceof HTMLTextAreaElement) {
          ev.preventDefault();
          editSubmit.click();
        }
      },
      onsubmit: async (ev) => {
        ev.preventDefault();
        if (editSubmit.disabled) return;
        const { patch, errors } = editChanges();
        if (errors.length) { showFieldErrors(editForm, errors); return; }
        if (!Object.keys(patch).length) {
          clearFieldErrors(editForm);
          flash('Nothing to save: no field was changed.', 'info');
          return;
        }
        busy(editSubmit, true, 'Saving…');
        try {
          sub = await subCall('PATCH', patch);
          if (!ctx.live()) return;
          clearFieldErrors(editForm);
          fillEdit();
          drawHead();
          flash('Subscription updated.', 'success');
        } catch (e) {
          if (isAbort(e) || e.status === 401) return;
          if (e.errors && e.errors.length) showFieldErrors(editForm, e.errors); else clearFieldErrors(editForm);
          flashError(e);
        } finally {
          busy(editSubmit, false);
          // A button that got disabled while focused loses the focus: give it back.
          if (ctx.live() && (!document.activeElement || document.activeElement === body)) editSubmit.focus();
        }
      },
    },
    webhook ? [
      field('url', 'URL', edit.url, 'Absolute http(s) URL that receives the events, without user:password@.'),
      field('headers', 'Custom headers', edit.headers, 'One per line, as Name: value; they replace the current ones (empty removes them all). Ctrl+Enter saves.'),
    ] : h('p', { class: 'muted small' }, `This subscription delivers to the connector instance ${subTarget(sub)}: it has no URL, secret or custom headers.`),
    field('events', 'Event types', edit.events, 'Comma-separated, e.g. order.created, order.paid — or * for every event type.'),
    field('filter', 'Payload filter (JSON, optional)', edit.filter, `${FILTER_HINT} Empty removes it. Ctrl+Enter saves.`),
    field('description', 'Description (optional)', edit.description, 'Empty removes it.'),
    rateFields(editRate, 'Rate limit'),
    field('ordered', 'Keep publish order per ordering key', edit.ordered, ORDERED_HINT),
    h('div', { class: 'actions' }, editSubmit, editReset));
    fillEdit();

    const deleteBtn = h('button', {
      type: 'button', class: 'button danger', 'data-test': 'delete-subscription',
      onclick: async () => {
        const ok = await confirmDialog({
          title: 'Delete this subscription?',
          text: `${subTarget(sub)} stops receiving events and its pending deliveries are cancelled. This cannot be undone.`,
          confirmLabel: 'Delete subscription',
        });
        if (!ok || !ctx.live()) return;
        busy(deleteBtn, true, 'Deleting…');
        try {
          await ctx.send('DELETE', `/subscriptions/${enc(id)}`);
          flash('Subscription deleted; its pending deliveries were cancelled.', 'success', true);
          go('#/subscriptions');
        } catch (e) { flashError(e); busy(deleteBtn, false); }
      },
    }, 'Delete subscription');
    ctx.onLeave(() => document.querySelectorAll('dialog[open]').forEach((d) => d.close()));

    // Deliveries with a state filter.
    const status = select({ 'data-test': 'deliveries-status', id: nextId('f-status') },
      [['', 'Any state']].concat(STATES.map((s) => [s, LABEL[s]])), '');
    const dtbody = h('tbody', {});
    const dtable = h('table', { 'data-test': 'deliveries-table' },
      h('thead', {}, h('tr', {}, ['Created', 'Event', 'State', 'Attempts', 'Last HTTP status', 'Next attempt', 'Last error'].map((t) => h('th', { scope: 'col' }, t)))),
      dtbody);
    const dmore = h('button', { type: 'button', class: 'button', 'data-test': 'load-more', hidden: true }, 'Load more');
    let dcursor = null;
    let dseq = 0;
    async function loadDeliveries(reset) {
      const seq = ++dseq;
      if (reset) dcursor = null;
      dtable.setAttribute('aria-busy', 'true');
      const wanted = status.value;
      const page = await ctx.get(`/subscriptions/${enc(id)}/deliveries`, { status: wanted, limit: 50, cursor: dcursor });
      if (seq !== dseq) return;
      if (reset) put(dtbody);
      dcursor = page.next_cursor;
      dmore.hidden = !dcursor;
      dtbody.append(...page.data.map((d) => h('tr', { 'data-test': 'delivery-row', 'data-id': d.id, 'data-status': d.status },
        h('td', { class: 'nowrap' }, fmtTime(d.created_at)),
        h('td', {}, h('a', { href: `#/events/${d.event_id}` }, d.event_type)),
        h('td', {}, badge(d.status)),
        h('td', {}, String(d.attempts)),
        h('td', {}, d.last_response_status == null ? '—' : String(d.last_response_status)),
        h('td', { class: 'nowrap' }, d.next_attempt_at ? fmtTime(d.next_attempt_at) : '—'),
        h('td', { class: 'error-text' }, d.last_error || ''))));
      if (!dtbody.children.length) {
        dtbody.append(h('tr', { class: 'empty' }, h('td', { colspan: '7' }, wanted ? `No ${LABEL[wanted].toLowerCase()} deliveries.` : 'No deliveries yet.')));
      }
      dtable.dataset.loadedStatus = wanted;
      dtable.setAttribute('aria-busy', 'false');
    }
    const filter = h('form', {
      class: 'inline-form', 'data-test': 'deliveries-filter',
      onsubmit: (ev) => { ev.preventDefault(); loadDeliveries(true).catch(flashError); },
    }, h('label', { for: status.id }, 'State'), status, h('button', { type: 'submit', class: 'button small' }, 'Show'));
    status.addEventListener('change', () => loadDeliveries(true).catch(flashError));
    dmore.addEventListener('click', async () => {
      busy(dmore, true, 'Loading…');
      try { await loadDeliveries(false); } catch (e) { flashError(e); } finally { busy(dmore, false); }
    });

    drawHead();
    ctx.render(
      h('p', { class: 'crumbs' }, h('a', { href: '#/subscriptions' }, 'Subscriptions'), ' / ', shortId(sub.id)),
      heading, meta,
      h('p', { class: 'links' }, h('a', { href: `#/events${qs({ subscription_id: sub.id })}` }, 'Its events'), ' · ',
        h('a', { href: `#/dead-letters${qs({ subscription_id: sub.id })}` }, 'Its dead letters')),
      h('section', { 'aria-labelledby': 'sub-stats-h' },
        h('div', { class: 'section-head' }, h('h2', { id: 'sub-stats-h' }, 'Statistics'),
          h('div', { class: 'segmented', role: 'group', 'aria-label': 'Window' }, windowBtns)),
        statsBox),
      h('section', { 'aria-labelledby': 'sub-actions-h' }, h('h2', { id: 'sub-actions-h' }, 'Actions'),
        h('div', { class: 'action-grid' },
          h('div', { class: 'card' }, h('h3', {}, 'Delivery'), pauseHint, h('div', { class: 'actions' }, toggle, pauseBtn)),
          h('div', { class: 'card' }, h('h3', {}, 'Test'), h('p', { class: 'muted small' }, 'Sends a signed hub.test event now; nothing is stored or retried.'), testBtn, testResult),
          tryCard,
          h('div', { class: 'card' }, h('h3', {}, 'Rotate secret'), rotate),
          h('div', { class: 'card' }, h('h3', {}, 'Delete'), h('p', { class: 'muted small' }, 'Pending deliveries are cancelled.'), deleteBtn))),
      h('section', { 'aria-labelledby': 'sub-edit-h' }, h('h2', { id: 'sub-edit-h' }, 'Edit'), editForm),
      h('section', { 'aria-labelledby': 'sub-deliveries-h' },
        h('div', { class: 'section-head' }, h('h2', { id: 'sub-deliveries-h' }, 'Deliveries'), filter),
        tableWrap('Deliveries', dtable), h('div', { class: 'actions' }, dmore)));
    await Promise.all([loadStats(), loadDeliveries(true)]);
  }

  // ---------------------------------------------------------------- dead letters

  async function pageDeadLetters(ctx) {
    const q = pick(ctx.query, ['event_type', 'since', 'until', 'subscription_id', 'connector']);
    const filtered = Object.keys(q).length > 0;
    const [subs, conns] = await Promise.all([subscriptionOptions(ctx), connectorNames(ctx)]);
    const form = filterForm('dead-letters', q, subs, conns, false);
    const tbody = h('tbody', {});
    const all = h('input', { type: 'checkbox', 'data-test': 'dead-letter-select-all', 'aria-label': 'Select every dead letter shown that can be replayed' });
    const table = h('table', { 'data-test': 'dead-letters-table' },
      h('caption', { class: 'visually-hidden' }, 'Dead letters, newest first'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all),
        ['Dead-lettered', 'Event', 'Destination', 'Attempts', 'Last error', 'Replayed', ''].map((t) => h('th', { scope: 'col' }, t)))),
      tbody);
    const selectedBtn = h('button', { type: 'button', class: 'button primary', 'data-test': 'replay-selected' }, 'Replay selected');
    const allBtn = h('button', { type: 'button', class: 'button', 'data-test': 'replay-all' }, 'Replay all matching');
    const more = h('button', { type: 'button', class: 'button', 'data-test': 'load-more', hidden: true }, 'Load more');
    const scope = filtered ? 'every dead letter matching the filters that has not been replayed yet'
      : 'every dead letter that has not been replayed yet (no filter is set)';
    ctx.render(h('h1', {}, 'Dead letters'), form,
      h('div', { class: 'toolbar' }, selectedBtn, allBtn, h('span', { class: 'muted small' }, `“Replay all matching” queues ${scope}, at most 10,000 per click.`)),
      tableWrap('Dead letters', table), h('div', { class: 'actions' }, more));
    let cursor = null;

    const boxes = () => [...tbody.querySelectorAll('input[data-test=dead-letter-select]')];
    const syncSelection = () => {
      const n = boxes().filter((b) => b.checked).length;
      selectedBtn.textContent = n ? `Replay selected (${n})` : 'Replay selected';
      const enabled = boxes().filter((b) => !b.disabled);
      all.checked = enabled.length > 0 && enabled.every((b) => b.checked);
    };
    all.addEventListener('change', () => { boxes().forEach((b) => { if (!b.disabled) b.checked = all.checked; }); syncSelection(); });

    async function replayOne(id) {
      return ctx.send('POST', `/admin/dead-letters/${enc(id)}/replay`);
    }

    function row(dl) {
      const replayed = Boolean(dl.replayed_at);
      const box = h('input', { type: 'checkbox', 'data-test': 'dead-letter-select', 'data-id': dl.id, disabled: replayed, 'aria-label': `Select the dead letter of event ${shortId(dl.event_id)}`, onchange: syncSelection });
      const btn = h('button', {
        type: 'button', class: 'button small', 'data-test': 'replay-one', 'data-id': dl.id, disabled: replayed,
        onclick: async () => {
          busy(btn, true, 'Replaying…');
          try {
            await replayOne(dl.id);
            flash(`Dead letter replayed: the delivery to ${destLabel(dl.destination)} is queued again.`, 'success');
            await reload();
          } catch (e) { flashError(e); if (btn.isConnected) busy(btn, false); }
        },
      }, 'Replay');
      return h('tr', { 'data-test': 'dead-letter-row', 'data-id': dl.id, 'data-replayed': String(replayed) },
        h('td', {}, box),
        h('td', { class: 'nowrap' }, fmtTime(dl.created_at)),
        h('td', {}, h('a', { href: `#/events/${dl.event_id}`, title: dl.event_id }, h('code', {}, dl.event_type || shortId(dl.event_id)))),
        h('td', { class: 'dest' }, destNode(dl.destination)),
        h('td', {}, String(dl.attempts)),
        h('td', { class: 'error-text' }, dl.last_error || ''),
        h('td', { class: 'nowrap' }, replayed ? fmtTime(dl.replayed_at) : 'no'),
        h('td', {}, btn));
    }

    async function loadPage() {
      let page;
      try {
        page = await ctx.get('/admin/dead-letters', Object.assign({ limit: 100, cursor }, q));
      } catch (e) {
        if (isAbort(e) || e.status === 401 || !e.errors || !e.errors.length) throw e;
        showFieldErrors(form, e.errors);
        flashError(e);
        return;
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      tbody.append(...page.data.map(row));
      if (!tbody.children.length) {
        tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: '8' }, filtered ? 'No dead letter matches these filters.' : 'No dead letters: every delivery succeeded or is still being retried.')));
      }
      syncSelection();
    }
    async function reload() {
      cursor = null;
      put(tbody);
      await loadPage();
    }

    selectedBtn.addEventListener('click', async () => {
      const ids = boxes().filter((b) => b.checked).map((b) => b.dataset.id);
      if (!ids.length) { flash('Select the dead letters to replay first.', 'info'); return; }
      busy(selectedBtn, true, 'Replaying…');
      const failures = [];
      let done = 0;
      await pool(ids, 4, async (id) => {
        try { await replayOne(id); done++; } catch (e) {
          if (isAbort(e) || e.status === 401) return;
          failures.push(`${shortId(id)}: ${e instanceof ApiError ? e.detail || e.title : errorText(e)}`);
        }
      });
      if (!ctx.live()) return;
      busy(selectedBtn, false);
      const msg = `Replayed ${done} of ${ids.length} selected dead letter${ids.length === 1 ? '' : 's'}.`;
      flash(failures.length ? `${msg} Not replayed: ${failures.join('; ')}` : msg, failures.length ? 'error' : 'success');
      try { await reload(); } catch (e) { flashError(e); }
    });

    allBtn.addEventListener('click', async () => {
      busy(allBtn, true, 'Replaying…');
      try {
        const r = await ctx.send('POST', '/admin/dead-letters/replay', q);
        const capped = r.replayed >= 10000 ? ' That is the most one call replays: click again for the rest.' : '';
        flash(`Replayed ${num(r.replayed)} dead letter${r.replayed === 1 ? '' : 's'}${filtered ? ' matching the filters' : ''}.${capped}`, 'success');
        await reload();
      } catch (e) {
        if (e.errors && e.errors.length) showFieldErrors(form, e.errors);
        flashError(e);
      } finally { busy(allBtn, false); }
    });
    more.addEventListener('click', async () => {
      busy(more, true, 'Loading…');
      try { await loadPage(); } catch (e) { flashError(e); } finally { busy(more, false); }
    });
    await loadPage();
  }

  // ---------------------------------------------------------------- connectors

  /** A connector's problem as a plain sentence (the API's text; a JSON message is unwrapped). */
  function problemSentence(c) {
    let text = String(c.problem || '').trim();
    if (/^[{[]/.test(text)) {
      try {
        const j = JSON.parse(text);
        text = j.message || j.error || j.detail || j.title || Object.values(j).filter((v) => typeof v === 'string').join('; ') || text;
      } catch (_) { /* keep the text */ }
    }
    const missing = /^missing required config:\s*(.+)$/i.exec(text);
    if (missing) return `It receives no events until these settings are set: ${missing[1].replace(/\.$/, '')}.`;
    if (c.status === 'failed') return `It could not be loaded: ${text.replace(/\.$/, '')}.`;
    return sentence(text);
  }
  function connectorProblem(c) {
    if (!c.problem) return h('span', { class: 'muted' }, c.status === 'active' ? '' : 'No reason given.');
    return h('span', { 'data-test': 'connector-problem' }, problemSentence(c));
  }

  async function pageConnectors(ctx) {
    const list = await ctx.get('/connectors');
    const cards = list.data.map((c) => {
      const stats = h('div', { 'data-test': 'connector-stats', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
      const short = c.sha256 ? c.sha256.slice(0, 12) : '';
      const tone = c.status === 'active' ? (c.problem ? 'warn' : 'ok') : TONE[c.status] || 'bad';
      const card = h('article', { class: 'card connector', 'data-test': 'connector', 'data-name': c.name, 'data-status': c.status },
        h('div', { class: 'card-head' },
          h('h2', {}, c.name, c.version ? h('span', { class: 'muted version' }, ` v${c.version}`) : null),
          badge(c.status, c.status === 'failed' ? 'Failed to load' : null)),
        c.description ? h('p', {}, c.description) : null,
        c.problem ? h('p', { class: `callout tone-${tone}`, 'data-test': 'connector-problem' }, problemSentence(c)) : null,
        h('dl', { class: 'meta' },
          h('dt', {}, 'Version'), h('dd', {}, c.version || '—'),
          h('dt', {}, 'Digest'), h('dd', {}, short ? h('code', { title: `SHA-256 ${c.sha256}`, 'data-test': 'connector-digest', 'data-digest': c.sha256 }, short) : '—'),
          h('dt', {}, 'Source'), h('dd', { class: 'break' }, c.source || '—'),
          h('dt', {}, 'Granted hosts'), h('dd', { 'data-test': 'connector-hosts' }, c.allowed_hosts.length
            ? h('ul', { class: 'plain' }, c.allowed_hosts.map((x) => h('li', { class: 'mono' }, x))) : 'none: it cannot reach the network'),
          h('dt', {}, 'Event types'), h('dd', {}, c.events.length ? c.events.join(', ') : 'none'),
          h('dt', {}, 'Waiting deliveries'), h('dd', {}, num(c.pending)),
          h('dt', {}, 'Loaded'), h('dd', {}, c.loaded_at ? fmtTime(c.loaded_at) : '—'),
          c.bound_since ? [h('dt', {}, 'Bound since'), h('dd', {}, fmtTime(c.bound_since))] : null),
        h('h3', {}, 'Last hour'), stats);
      return { c, card, stats };
    });
    ctx.render(h('h1', {}, 'Connectors'),
      cards.length ? h('div', { class: 'cards' }, cards.map((x) => x.card))
        : h('p', { class: 'muted' }, 'No connector is loaded or bound. Copy a connector component into IH_CONNECTORS_DIR to add one.'));
    await pool(cards, 4, async ({ c, stats }) => {
      try {
        const s = await ctx.get(`/connectors/${enc(c.name)}/stats`, { window: '1h' });
        const failed = s.failed != null ? s.failed : s.attempts - s.succeeded;
        const lat = s.latency_ms || s.latency;
        put(stats, h('dl', { class: 'figures compact' },
          fig('connector-invocations', 'Invocations', num(s.attempts), s.attempts),
          fig('connector-succeeded', 'Succeeded', num(s.succeeded), s.succeeded, s.succeeded ? 'ok' : null),
          fig('connector-failed', 'Failed', num(failed), failed, failed ? 'bad' : null),
          fig('connector-success-rate', 'Success rate', pct(s.success_rate), s.success_rate, rateTone(s.success_rate)),
          fig('connector-latency', 'Latency p95', lat ? ms(lat.p95) : '—', lat ? lat.p95 : null)),
        s.last_failure ? h('p', { class: 'small' }, 'Latest failure: ', lastFailure(s.last_failure)) : null);
      } catch (e) {
        if (isAbort(e) || e.status === 401) throw e;
        put(stats, h('p', { class: 'muted' }, `No figures: ${e instanceof ApiError ? e.detail || e.title : errorText(e)}`));
      }
      stats.setAttribute('aria-busy', 'false');
    });
  }

  // ---------------------------------------------------------------- start

  document.querySelector('.skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', () => route(true));
  setKey(getKey());
  setFeedStatus('off');
  route(false);
})();
