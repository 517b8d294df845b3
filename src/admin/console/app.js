// keygate console: a small, dependency-free script served from the binary.
//
// Invariants: the credential lives in this tab's sessionStorage only and travels in a
// request header (Authorization: Bearer, or the key header), never in a cookie or a
// URL; every text from the server is put into the page with textContent, never as
// HTML; a secret is shown once, in the "secret" dialog, which closes only once its
// "I have stored the key in a safe place" box is ticked, and is cleared when it closes.
// Views: the key list (#/keys), one key (#/keys/<id>) and the audit log (#/audit), each
// a link, so the keyboard and the browser's Back button reach them. Field errors sit
// under their field, in the form's words ("User ID"), and the first one gets the focus.
// The key form's shared parts (pickers, metadata rows, allowlist, field errors) live in
// fields.js, the Edit dialog and Suspend/Resume in edit.js; both load before this file.
'use strict';

(() => {
  const { $, el, slug, when, accessPicker, metadataEditor, readIps, readExpiry, fieldErrors, keyFields, usage } = window.keygate;
  const meta = (name) => {
    const m = document.querySelector(`meta[name="${name}"]`);
    return m ? m.getAttribute('content') : '';
  };
  const KEY_PREFIX = meta('keygate-key-prefix');
  const KEY_HEADER = meta('keygate-key-header') || 'X-API-Key';
  const STORE = 'keygate.credential';
  let policy = null;
  let me = null;
  let nextCursor = null;
  let listGeneration = 0;
  let pending = null; // the key a dialog acts on

  // ---- HTTP ----------------------------------------------------------------

  function authHeaders() {
    const c = sessionStorage.getItem(STORE);
    const h = {};
    if (!c) return h;
    if (KEY_PREFIX && c.startsWith(KEY_PREFIX)) h[KEY_HEADER] = c;
    else h.Authorization = `Bearer ${c}`;
    return h;
  }

  async function api(method, path, body) {
    const headers = authHeaders();
    const opts = { method, headers, credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    const text = await resp.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!resp.ok) {
      const msg = data && data.error && data.error.message ? data.error.message : `HTTP ${resp.status}`;
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  // ---- helpers -------------------------------------------------------------

  // Dialogs: focus moves into the dialog on open (showModal) and back to the
  // control that opened it on close.
  function openDialog(dialog, opener) {
    dialog.returnTo = opener || null;
    dialog.showModal();
    const first = dialog.querySelector('[autofocus]') || dialog.querySelector('input:not([type=hidden]):not([readonly]), select, button');
    if (first) first.focus();
  }

  for (const d of document.querySelectorAll('dialog')) {
    d.addEventListener('close', () => {
      const back = d.returnTo;
      d.returnTo = null;
      if (back && document.body.contains(back) && !back.disabled && back.offsetParent) back.focus();
      else if (!$('detail-view').hidden) $('detail-title').focus();
      else $('create-open').focus();
    });
  }

  // ---- sign-in -------------------------------------------------------------

  function showSignedOut(message) {
    sessionStorage.removeItem(STORE);
    me = null;
    policy = null;
    for (const v of VIEWS) $(v).hidden = true;
    $('nav').hidden = true;
    $('signin-view').hidden = false;
    $('who').hidden = true;
    $('signout').hidden = true;
    $('signin-error').textContent = message || '';
    $('credential').value = '';
    $('credential').focus();
  }

  async function enter() {
    me = await api('GET', '/v1/whoami');
    policy = await api('GET', '/v1/policy');
    $('signin-view').hidden = true;
    $('signout').hidden = false;
    $('nav').hidden = false;
    $('nav-audit').hidden = me.kind === 'self'; // the audit log needs an admin
    const who = $('who');
    who.hidden = false;
    if (me.kind === 'token') who.textContent = 'Signed in with the admin token (every business)';
    else if (me.kind === 'admin') who.textContent = `Signed in with admin key ${me.key_id} (business ${me.business_id})`;
    else who.textContent = `Signed in with key ${me.key_id} (user ${me.user_id}, business ${me.business_id})`;
    await route(true);
  }

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = $('credential').value.trim();
    $('signin-error').textContent = '';
    if (!value) {
      $('signin-error').textContent = 'Enter the admin token or an admin key.';
      $('credential').focus();
      return;
    }
    sessionStorage.setItem(STORE, value);
    $('credential').value = '';
    try {
      await enter();
    } catch (e) {
      showSignedOut(e.status === 401 || e.status === 403
        ? `Sign-in refused: ${e.message}`
        : `Could not sign in: ${e.message}`);
    }
  });

  $('signout').addEventListener('click', () => showSignedOut('Signed out.'));

  function failed(e, where) {
    if (e.status === 401) {
      showSignedOut(`Your credentials were refused (${e.message}). Sign in again.`);
      return true;
    }
    where.textContent = e.message;
    return false;
  }

  // ---- the key list --------------------------------------------------------

  function keyQuery() {
    const p = new URLSearchParams();
    const search = $('search').value.trim();
    const status = $('status').value;
    if (search) p.set('search', search);
    if (status) p.set('status', status);
    p.set('limit', '50');
    if (nextCursor) p.set('cursor', nextCursor);
    return p.toString();
  }

  async function loadKeys(append) {
    const generation = ++listGeneration;
    if (!append) nextCursor = null;
    $('list-status').textContent = 'Loading\u2026';
    let page;
    try {
      page = await api('GET', `/v1/keys?${keyQuery()}`);
    } catch (e) {
      if (generation === listGeneration) failed(e, $('list-status'));
      return;
    }
    if (generation !== listGeneration) return; // a newer search has started
    const body = $('keys-body');
    if (!append) body.replaceChildren();
    for (const k of page.keys) body.append(row(k));
    nextCursor = page.next_cursor;
    $('more').hidden = !nextCursor;
    const n = body.children.length;
    $('list-status').textContent = n === 0
      ? 'No keys match.'
      : `${n} key${n === 1 ? '' : 's'} shown${nextCursor ? ' (more available)' : ''}.`;
  }

  function access(k) {
    const parts = [];
    if (k.scopes.length) parts.push(el('div', { text: `Scopes: ${k.scopes.join(', ')}` }));
    parts.push(el('div', { text: `Locations: ${k.locations.length ? k.locations.join(', ') : 'none'}` }));
    for (const g of k.grants) parts.push(el('div', { text: `${g.role} at ${g.locations.join(', ')}` }));
    if (k.allowed_ips.length) parts.push(el('div', { text: `From: ${k.allowed_ips.join(', ')}` }));
    return cell('Access', { class: 'small wrap' }, ...parts);
  }

  // A cell that says what it is when the table is shown as cards (narrow screens).
  function cell(label, props, ...children) {
    const td = el('td', props, ...children);
    td.dataset.label = label;
    return td;
  }

  function row(k) {
    const nameId = `name-${slug(k.id)}`;
    const tr = el('tr', {});
    tr.dataset.id = k.id;
    const link = el('a', { href: `#/keys/${encodeURIComponent(k.id)}`, class: 'name', id: nameId, text: k.name });
    tr.append(
      cell('Name', {}, link,
        k.description ? el('div', { class: 'small muted', text: k.description }) : null),
      cell('Key', { class: 'wrap' }, el('code', { text: `${k.prefix}\u2026` }), el('div', { class: 'small muted', text: k.id })),
      cell('Owner', { class: 'small' }, el('div', { text: `User ${k.user_id}` }), el('div', { class: 'muted', text: `Business ${k.business_id}` })),
      access(k),
      cell('Dates', { class: 'small' },
        el('div', { text: `Created ${when(k.created_at, '')}` }),
        el('div', { text: `Last used ${when(k.last_used_at, 'never')}` }),
        el('div', { text: `Expires ${when(k.expires_at, 'never')}` })),
      cell('Last 7 days', { class: 'spark-cell' }, usage.spark(api, k)),
      cell('Status', { class: 'status-cell' }, el('span', { class: `badge ${k.status}`, text: k.status })),
    );
    tr.append(cell('Actions', { class: 'actions-cell' }, ...keyActions(k, nameId)));
    return tr;
  }

  // A key's buttons: Edit and Suspend or Resume (edit.js), Rotate and Revoke; none
  // once it is revoked.
  function keyActions(k, describedBy) {
    if (k.status === 'revoked') return [];
    const button = (text, cls, act) => {
      const b = el('button', { type: 'button', text, class: cls });
      if (describedBy) b.setAttribute('aria-describedby', describedBy);
      b.addEventListener('click', () => act(k, b));
      return b;
    };
    return [...editor.buttons(k, button), button('Rotate', '', askRotate), button('Revoke', 'danger', askRevoke)];
  }

  let searchTimer = null;
  $('search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadKeys(false), 250);
  });
  $('search').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      clearTimeout(searchTimer);
      loadKeys(false);
    }
  });
  $('status').addEventListener('change', () => loadKeys(false));
  $('more').addEventListener('click', () => loadKeys(true));

  // ---- create --------------------------------------------------------------

  let createAccess = null;
  const createMeta = metadataEditor('new-');
  const createIps = { lines: [] }; // what the last submit sent, for `allowed_ips[i]`

  // The form's fields by the admin API's names: where an error shows, in the form's words.
  const FIELDS = keyFields('new-', '', createMeta, createIps, {
    user_id: { id: 'new-user', label: 'User ID' },
    business_id: { id: 'new-business', label: 'Business ID' },
  });
  const createErrors = fieldErrors($('create-form'), FIELDS, $('create-error'));
  const ID_RULE = /^[A-Za-z0-9._@:+-]{1,128}$/;

  $('create-open').addEventListener('click', () => {
    $('create-form').reset();
    createAccess = accessPicker('', policy);
    createMeta.set({});
    createErrors.clear();
    $('custom-field').hidden = true;
    const user = $('new-user');
    const business = $('new-business');
    user.readOnly = false;
    business.readOnly = false;
    if (me && me.kind !== 'token') {
      business.value = me.business_id;
      business.readOnly = true;
    }
    if (me && me.kind === 'self') {
      user.value = me.user_id;
      user.readOnly = true;
    }
    openDialog($('create-dialog'), $('create-open'));
  });

  $('create-cancel').addEventListener('click', () => $('create-dialog').close());

  $('new-expires').addEventListener('change', () => {
    const custom = $('new-expires').value === 'custom';
    $('custom-field').hidden = !custom;
    if (custom) $('new-expires-at').focus();
  });

  $('create-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    createErrors.clear();
    const body = {
      name: $('new-name').value.trim(),
      description: $('new-description').value.trim(),
      user_id: $('new-user').value.trim(),
      business_id: $('new-business').value.trim(),
      ...createAccess.read(),
    };
    const errors = {};
    if (!body.name) errors.name = 'Name is required.';
    for (const field of ['user_id', 'business_id']) {
      const { label } = FIELDS[field];
      if (!body[field]) errors[field] = `${label} is required.`;
      else if (!ID_RULE.test(body[field])) errors[field] = `${label} must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ @ : + -`;
    }
    const meta = createMeta.read();
    if (meta.error) errors.metadata = meta.error;
    else if (Object.keys(meta.value).length) body.metadata = meta.value;
    const ips = readIps($('new-allowed-ips'));
    if (ips.error) errors.allowed_ips = ips.error;
    else if (ips.list.length) body.allowed_ips = ips.list;
    createIps.lines = ips.lines;
    const expiry = readExpiry($('new-expires'), $('new-expires-at'));
    if (expiry.error) errors.expires_at = expiry.error;
    else Object.assign(body, expiry);
    if (createErrors.show(errors)) return;
    try {
      const created = await api('POST', '/v1/keys', body);
      $('create-dialog').close();
      showSecret(created);
      loadKeys(false);
    } catch (e) {
      const fieldError = e.status === 400 || e.status === 403 ? createErrors.server(e.message) : null;
      if (fieldError) createErrors.show(fieldError);
      else failed(e, $('create-error'));
    }
  });

  // ---- the secret, shown once ----------------------------------------------

  let shown = null;

  function showSecret(created) {
    shown = { name: created.name, key: created.key };
    $('secret-name').textContent = created.name;
    $('secret-value').value = created.key;
    $('copy-status').textContent = '';
    $('secret-stored').checked = false;
    $('secret-stored-error').hidden = true;
    $('secret-stored').removeAttribute('aria-invalid');
    openDialog($('secret-dialog'), document.activeElement);
    $('secret-copy').focus();
  }

  // "Done" (and Escape) close the dialog only once the person says the key is stored.
  function secretStored() {
    if ($('secret-stored').checked) return true;
    const box = $('secret-stored-error');
    box.textContent = 'Tick \u201cI have stored the key in a safe place\u201d first: the key will not be shown again.';
    box.hidden = false;
    $('secret-stored').setAttribute('aria-invalid', 'true');
    $('secret-stored').focus();
    return false;
  }

  $('secret-stored').addEventListener('change', () => {
    if ($('secret-stored').checked) {
      $('secret-stored-error').hidden = true;
      $('secret-stored').removeAttribute('aria-invalid');
    }
  });
  $('secret-dialog').addEventListener('cancel', (ev) => {
    if (!secretStored()) ev.preventDefault();
  });

  $('secret-copy').addEventListener('click', async () => {
    if (!shown) return;
    try {
      await navigator.clipboard.writeText(shown.key);
      $('copy-status').textContent = 'Copied to the clipboard.';
    } catch (_) {
      const input = $('secret-value');
      input.focus();
      input.select();
      $('copy-status').textContent = 'Selected: press Ctrl+C (or \u2318C) to copy.';
    }
  });

  $('secret-download').addEventListener('click', () => {
    if (!shown) return;
    const blob = new Blob([shown.key], { type: 'application/octet-stream' });
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: `${shown.name.replace(/[\\/:*?"<>|\u0000-\u001f]/g, '_')}.apikey` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $('copy-status').textContent = `Downloaded ${shown.name}.apikey.`;
  });

  $('secret-done').addEventListener('click', () => {
    if (secretStored()) $('secret-dialog').close();
  });
  $('secret-dialog').addEventListener('close', () => {
    shown = null;
    $('secret-value').value = '';
  });

  // ---- revoke and rotate ---------------------------------------------------

  function askRevoke(k, opener) {
    pending = k;
    $('revoke-text').textContent = `"${k.name}" (${k.id}) will be refused by every gateway within a second. This cannot be undone.`;
    $('revoke-error').textContent = '';
    openDialog($('revoke-dialog'), opener);
    $('revoke-cancel').focus();
  }

  $('revoke-cancel').addEventListener('click', () => $('revoke-dialog').close());
  $('revoke-confirm').addEventListener('click', async () => {
    const k = pending;
    if (!k) return;
    try {
      await api('DELETE', `/v1/keys/${encodeURIComponent(k.id)}`);
      $('revoke-dialog').close();
      await refresh();
      $(onDetail() ? 'detail-status' : 'list-status').textContent = `Revoked "${k.name}".`;
    } catch (e) {
      failed(e, $('revoke-error'));
    }
  });

  function askRotate(k, opener) {
    pending = k;
    $('rotate-text').textContent = `"${k.name}" gets a new secret with the same owner, scopes, locations and roles. The old secret stops working after the time you pick.`;
    $('rotate-error').textContent = '';
    openDialog($('rotate-dialog'), opener);
    $('rotate-grace').focus();
  }

  $('rotate-cancel').addEventListener('click', () => $('rotate-dialog').close());
  $('rotate-confirm').addEventListener('click', async () => {
    const k = pending;
    if (!k) return;
    try {
      const created = await api('POST', `/v1/keys/${encodeURIComponent(k.id)}/rotate`, { grace: $('rotate-grace').value });
      $('rotate-dialog').close();
      showSecret(created);
      refresh();
    } catch (e) {
      failed(e, $('rotate-error'));
    }
  });

  // ---- views: the key list, one key, the audit log -------------------------

  const VIEWS = ['keys-view', 'detail-view', 'audit-view'];
  let countdown = null;

  function show(view) {
    for (const v of VIEWS) $(v).hidden = v !== view;
    for (const [link, on] of [['nav-keys', view !== 'audit-view'], ['nav-audit', view === 'audit-view']]) {
      if (on) $(link).setAttribute('aria-current', 'page');
      else $(link).removeAttribute('aria-current');
    }
    if (view !== 'detail-view') clearInterval(countdown);
  }

  const onDetail = () => !$('detail-view').hidden;

  // After a suspend, resume or edit of `k`: its row (or the detail view) shows the record
  // the server answered, the focus goes to the button named `focus` (the one that took
  // the clicked one's place), and `message` is announced.
  async function changed(k, message, focus) {
    let where;
    let buttons;
    if (onDetail()) {
      await showDetail(k.id, false);
      where = $('detail-status');
      buttons = $('detail-actions');
    } else {
      const old = [...$('keys-body').children].find((tr) => tr.dataset.id === k.id);
      buttons = row(k);
      if (old) old.replaceWith(buttons);
      where = $('list-status');
    }
    where.textContent = message;
    const next = [...buttons.querySelectorAll('button')].find((b) => b.textContent === focus);
    if (next) next.focus();
  }

  const editor = window.keygate.editor({
    api, openDialog, failed, changed, policy: () => policy,
    statusLine: () => $(onDetail() ? 'detail-status' : 'list-status'),
  });

  // After a change: reload whatever is on screen.
  async function refresh() {
    if (onDetail() && pending) await showDetail(pending.id, false);
    else await loadKeys(false);
  }

  // The view the address names; `first`: just signed in (focus the list's search).
  async function route(first) {
    if (!me) return;
    const hash = location.hash;
    if (hash.startsWith('#/keys/')) {
      await showDetail(decodeURIComponent(hash.slice('#/keys/'.length)), true);
    } else if (hash === '#/audit') {
      await showAudit();
    } else {
      const wasHidden = $('keys-view').hidden;
      show('keys-view');
      if (first || wasHidden) {
        await loadKeys(false);
        $(first ? 'search' : 'keys-title').focus();
      }
    }
  }

  window.addEventListener('hashchange', () => route(false));

  // "in 2 d 3 h", "in 4 min 10 s", or "expired 5 min ago".
  function remaining(ts) {
    const ms = new Date(ts).getTime() - Date.now();
    let s = Math.floor(Math.abs(ms) / 1000);
    const parts = [];
    for (const [unit, size] of [['d', 86400], ['h', 3600], ['min', 60], ['s', 1]]) {
      const n = Math.floor(s / size);
      s -= n * size;
      if (n || (unit === 's' && parts.length === 0)) parts.push(`${n} ${unit}`);
      if (parts.length === 3) break;
    }
    return ms >= 0 ? `in ${parts.join(' ')}` : `expired ${parts.join(' ')} ago`;
  }

  function field(dl, label, ...value) {
    dl.append(el('div', { class: 'pair' }, el('dt', { text: label }), el('dd', {}, ...value)));
  }

  async function showDetail(id, focus) {
    let k;
    try {
      k = await api('GET', `/v1/keys/${encodeURIComponent(id)}`);
    } catch (e) {
      show('detail-view');
      $('detail-title').textContent = 'Key not found';
      $('detail-body').hidden = true;
      $('detail-actions').replaceChildren();
      if (!failed(e, $('detail-status')) && focus) $('detail-title').focus();
      return;
    }
    pending = k;
    show('detail-view');
    $('detail-body').hidden = false;
    $('detail-status').textContent = '';
    $('detail-title').textContent = k.name;
    const dl = $('detail-fields');
    dl.replaceChildren();
    const list = (xs) => (xs.length ? xs.join(', ') : 'none');
    field(dl, 'ID', el('code', { text: k.id }));
    field(dl, 'Key prefix', el('code', { text: `${k.prefix}\u2026` }));
    field(dl, 'Status', el('span', { class: `badge ${k.status}`, text: k.status }));
    field(dl, 'Name', k.name);
    field(dl, 'Description', k.description || '\u2014');
    field(dl, 'User ID', k.user_id);
    field(dl, 'Business ID', k.business_id);
    field(dl, 'Scopes', list(k.scopes));
    field(dl, 'Locations', list(k.locations));
    field(dl, 'Created', when(k.created_at, ''));
    field(dl, 'Created by', k.created_by || '\u2014');
    field(dl, 'Last used', when(k.last_used_at, 'never'));
    const left = el('span', { id: 'detail-countdown', class: 'muted' });
    field(dl, 'Expires', when(k.expires_at, 'never'), k.expires_at ? ' (' : null, k.expires_at ? left : null, k.expires_at ? ')' : null);
    field(dl, 'Revoked', when(k.revoked_at, 'no'));
    field(dl, 'Updated', when(k.updated_at, ''));
    const entries = Object.entries(k.metadata);
    field(dl, 'Metadata', ...(entries.length
      ? entries.map(([n, v]) => el('div', {}, el('code', { text: `${n}: ${v}` })))
      : ['none']));
    field(dl, 'Allowed IPs', ...(k.allowed_ips.length
      ? k.allowed_ips.map((a) => el('div', {}, el('code', { text: a })))
      : ['anywhere']));
    field(dl, 'Plan', k.plan || 'none');
    const own = Object.entries(k.limits || {});
    field(dl, 'Own rate limits', ...(own.length
      ? own.map(([route, rate]) => el('div', {}, el('code', { text: `${route}: ${rate}` })))
      : ['the routes\u2019 (and the plan\u2019s)']));
    field(dl, 'Quota', usage.quotaText(k.quota));
    clearInterval(countdown);
    if (k.expires_at) {
      const tick = () => { left.textContent = remaining(k.expires_at); };
      tick();
      countdown = setInterval(tick, 1000);
    }
    grantMatrix(k);
    usage.detail(api, k);
    $('detail-actions').replaceChildren(...keyActions(k, null));
    if (focus) $('detail-title').focus();
  }

  // Grants as a small matrix: a row per granted role, a column per location.
  function grantMatrix(k) {
    const table = $('detail-grants');
    table.replaceChildren();
    const none = k.grants.length === 0;
    table.hidden = none;
    $('detail-grants-none').hidden = !none;
    if (none) return;
    // Columns: the key's own locations, then any other location a grant names.
    const columns = [];
    for (const l of [...k.locations, ...k.grants.flatMap((g) => g.locations)]) if (!columns.includes(l)) columns.push(l);
    const head = el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Role' }),
      ...columns.map((c) => el('th', { scope: 'col', text: c === '*' ? 'All (*)' : c }))));
    const body = el('tbody', {});
    for (const g of k.grants) {
      const tr = el('tr', {}, el('th', { scope: 'row', text: g.role }));
      for (const c of columns) {
        const yes = g.locations.includes(c);
        tr.append(el('td', { class: `center ${yes ? 'yes' : 'no'}`, text: yes ? '\u2713' : '\u2013',
          'aria-label': `${g.role} at ${c === '*' ? 'all locations' : c}: ${yes ? 'granted' : 'not granted'}` }));
      }
      body.append(tr);
    }
    table.append(el('caption', { class: 'sr-only', text: 'Roles granted by location' }), head, body);
  }

  async function showAudit() {
    show('audit-view');
    $('audit-title').focus();
    $('audit-status').textContent = 'Loading\u2026';
    let page;
    try {
      page = await api('GET', '/v1/audit?limit=200');
    } catch (e) {
      failed(e, $('audit-status'));
      return;
    }
    const body = $('audit-body');
    body.replaceChildren();
    for (const ev of page.events) {
      const key = el('a', { href: `#/keys/${encodeURIComponent(ev.key_id)}` }, el('code', { text: ev.key_id }));
      body.append(el('tr', {},
        cell('When', { class: 'small' }, when(ev.at, '')),
        cell('Who', { class: 'small wrap' }, ev.actor),
        cell('Action', {}, el('span', { class: `badge ${ev.action}`, text: ev.action })),
        cell('Key', { class: 'wrap' }, key),
        cell('Business', { class: 'small' }, ev.business_id),
        cell('Detail', { class: 'small wrap' }, ev.detail || '\u2014')));
    }
    const n = page.events.length;
    $('audit-status').textContent = n === 0 ? 'No events yet.' : `${n} event${n === 1 ? '' : 's'}, newest first.`;
  }

  // ---- start ---------------------------------------------------------------

  if (sessionStorage.getItem(STORE)) {
    enter().catch((e) => showSignedOut(`Sign in again (${e.message}).`));
  } else {
    $('credential').focus();
  }
})();
