// keygate console: a small, dependency-free script served from the binary.
//
// Invariants: the credential lives in this tab's sessionStorage only and travels in a
// request header (Authorization: Bearer, or the key header), never in a cookie or a
// URL; every text from the server is put into the page with textContent, never as
// HTML; a secret is shown once, in the "secret" dialog, and cleared when it closes.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const meta = (name) => {
    const m = document.querySelector(`meta[name="${name}"]`);
    return m ? m.getAttribute('content') : '';
  };
  const KEY_PREFIX = meta('keygate-key-prefix');
  const KEY_HEADER = meta('keygate-key-header') || 'X-API-Key';
  const STORE = 'keygate.credential';
  const BUILTIN_SCOPES = [
    ['keygate:admin', 'Manage every key of its own business through this API and console'],
    ['keygate:self', 'Manage its own user\u2019s keys through this API and console'],
  ];

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

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('aria-') || k === 'for' || k === 'scope' || k === 'role') e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function when(ts, none) {
    if (!ts) return none;
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return ts;
    return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  }

  function slug(text) {
    return text.replace(/[^A-Za-z0-9_-]+/g, '-');
  }

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
      if (back && document.body.contains(back) && !back.disabled) back.focus();
      else $('create-open').focus();
    });
  }

  // ---- sign-in -------------------------------------------------------------

  function showSignedOut(message) {
    sessionStorage.removeItem(STORE);
    me = null;
    policy = null;
    $('keys-view').hidden = true;
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
    $('keys-view').hidden = false;
    $('signout').hidden = false;
    const who = $('who');
    who.hidden = false;
    if (me.kind === 'token') who.textContent = 'Signed in with the admin token (every business)';
    else if (me.kind === 'admin') who.textContent = `Signed in with admin key ${me.key_id} (business ${me.business_id})`;
    else who.textContent = `Signed in with key ${me.key_id} (user ${me.user_id}, business ${me.business_id})`;
    await loadKeys(false);
    $('search').focus();
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
    return el('td', { class: 'small' }, ...parts);
  }

  function row(k) {
    const nameId = `name-${slug(k.id)}`;
    const tr = el('tr', {});
    tr.dataset.id = k.id;
    tr.append(
      el('td', {}, el('div', { class: 'name', id: nameId, text: k.name }),
        k.description ? el('div', { class: 'small muted', text: k.description }) : null),
      el('td', {}, el('code', { text: `${k.prefix}\u2026` }), el('div', { class: 'small muted', text: k.id })),
      el('td', { class: 'small' }, el('div', { text: `User ${k.user_id}` }), el('div', { class: 'muted', text: `Business ${k.business_id}` })),
      access(k),
      el('td', { class: 'small nowrap', text: when(k.created_at, '') }),
      el('td', { class: 'small nowrap', text: when(k.last_used_at, 'never') }),
      el('td', { class: 'small nowrap', text: when(k.expires_at, 'never') }),
      el('td', {}, el('span', { class: `badge ${k.status}`, text: k.status })),
    );
    const actions = el('td', { class: 'actions-cell' });
    if (k.status !== 'revoked') {
      const rotate = el('button', { type: 'button', text: 'Rotate', 'aria-describedby': nameId });
      rotate.addEventListener('click', () => askRotate(k, rotate));
      const revoke = el('button', { type: 'button', class: 'danger', text: 'Revoke', 'aria-describedby': nameId });
      revoke.addEventListener('click', () => askRevoke(k, revoke));
      actions.append(rotate, revoke);
    }
    tr.append(actions);
    return tr;
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

  function checkbox(id, value, labelText, describedBy) {
    const input = el('input', { type: 'checkbox', id, value });
    if (describedBy) input.setAttribute('aria-describedby', describedBy);
    return [input, el('label', { for: id, text: labelText })];
  }

  function buildCreateForm() {
    const scopes = [...policy.scopes.map((s) => [s.name, s.description]), ...BUILTIN_SCOPES];
    const list = $('scope-list');
    list.replaceChildren();
    scopes.forEach(([name, description], i) => {
      const descId = `scope-desc-${i}`;
      const [input, label] = checkbox(`scope-${i}`, name, name, descId);
      list.append(el('div', { class: 'check' }, input, label, el('span', { class: 'desc', id: descId, text: description })));
    });

    const locs = $('location-list');
    locs.replaceChildren();
    const [allInput, allLabel] = checkbox('loc-all', '*', 'All locations (*)');
    locs.append(el('div', { class: 'check' }, allInput, allLabel));
    policy.locations.forEach((l, i) => {
      const [input, label] = checkbox(`loc-${i}`, l, l);
      locs.append(el('div', { class: 'check' }, input, label));
    });

    const columns = [...policy.locations, '*'];
    const head = el('tr', {}, el('th', { scope: 'col', text: 'Role' }),
      ...columns.map((c) => el('th', { scope: 'col', text: c === '*' ? 'All (*)' : c })));
    $('grant-head').replaceChildren(head);
    const body = $('grant-body');
    body.replaceChildren();
    if (policy.roles.length === 0) {
      body.append(el('tr', {}, el('td', { colSpan: columns.length + 1, class: 'muted', text: 'The policy declares no roles.' })));
    }
    policy.roles.forEach((r, ri) => {
      const tr = el('tr', {}, el('th', { scope: 'row' }, el('span', { text: r.name }),
        el('span', { class: 'small muted block', text: r.scopes.join(', ') })));
      columns.forEach((c, ci) => {
        const input = el('input', { type: 'checkbox', id: `grant-${ri}-${ci}`, 'aria-label': `${r.name} at ${c === '*' ? 'all locations' : c}` });
        input.dataset.role = r.name;
        input.dataset.location = c;
        tr.append(el('td', { class: 'center' }, input));
      });
      body.append(tr);
    });
  }

  $('create-open').addEventListener('click', () => {
    $('create-form').reset();
    buildCreateForm();
    $('create-error').textContent = '';
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
    const err = $('create-error');
    err.textContent = '';
    const body = {
      name: $('new-name').value.trim(),
      description: $('new-description').value.trim(),
      user_id: $('new-user').value.trim(),
      business_id: $('new-business').value.trim(),
      scopes: [...document.querySelectorAll('#scope-list input:checked')].map((i) => i.value),
      locations: [...document.querySelectorAll('#location-list input:checked')].map((i) => i.value),
      grants: [],
    };
    const byRole = new Map();
    for (const i of document.querySelectorAll('#grant-body input:checked')) {
      if (!byRole.has(i.dataset.role)) byRole.set(i.dataset.role, []);
      byRole.get(i.dataset.role).push(i.dataset.location);
    }
    for (const [role, locations] of byRole) body.grants.push({ role, locations });
    const expires = $('new-expires').value;
    if (expires === 'custom') {
      const local = $('new-expires-at').value;
      const at = local ? new Date(local) : null;
      if (!at || Number.isNaN(at.getTime())) {
        err.textContent = 'Expires: pick a custom date and time.';
        $('new-expires-at').focus();
        return;
      }
      body.expires_at = at.toISOString().replace(/\.\d{3}Z$/, 'Z');
    } else {
      body.expires_in = expires;
    }
    for (const [field, id, label] of [['name', 'new-name', 'Name'], ['user_id', 'new-user', 'User ID'], ['business_id', 'new-business', 'Business ID']]) {
      if (!body[field]) {
        err.textContent = `${label} is required.`;
        $(id).focus();
        return;
      }
    }
    try {
      const created = await api('POST', '/v1/keys', body);
      $('create-dialog').close();
      showSecret(created);
      loadKeys(false);
    } catch (e) {
      failed(e, err);
    }
  });

  // ---- the secret, shown once ----------------------------------------------

  let shown = null;

  function showSecret(created) {
    shown = { name: created.name, key: created.key };
    $('secret-name').textContent = created.name;
    $('secret-value').value = created.key;
    $('copy-status').textContent = '';
    openDialog($('secret-dialog'), $('create-open'));
    $('secret-copy').focus();
  }

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

  $('secret-done').addEventListener('click', () => $('secret-dialog').close());
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
      await loadKeys(false);
      $('list-status').textContent = `Revoked "${k.name}".`;
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
      loadKeys(false);
    } catch (e) {
      failed(e, $('rotate-error'));
    }
  });

  // ---- start ---------------------------------------------------------------

  if (sessionStorage.getItem(STORE)) {
    enter().catch((e) => showSignedOut(`Sign in again (${e.message}).`));
  } else {
    $('credential').focus();
  }
})();
