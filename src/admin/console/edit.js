// keygate console: changing a key in place. The "Edit key" dialog (name, description,
// scopes, locations, roles by location, expiry, metadata, allowed IPs) and the Suspend
// and Resume buttons, over `PATCH /v1/keys/{id}` and `POST /v1/keys/{id}/suspend` and
// `/resume`. Loaded after fields.js and before app.js, which calls `keygate.editor`
// with what it shares (the HTTP helper, dialogs, the policy, how to show a change).
//
// Invariants: a PATCH carries only the fields the person changed (an unchanged form
// sends nothing), so an edit never rewrites a field someone else changed meanwhile;
// Suspend shows on an active key, Resume on a suspended one, nothing on a revoked one;
// errors sit next to their field in the form's words, the first one focused, whether
// the browser or the server found them (a 403 for power the caller lacks names its
// field too: "scopes: `reports:read`: ..."); a refusal naming none (409: a revoked key)
// is said at the foot of the dialog.
'use strict';

window.keygate.editor = (ctx) => {
  const { $, when, accessPicker, metadataEditor, readIps, readExpiry, fieldErrors, keyFields } = window.keygate;
  const meta = metadataEditor('edit-');
  const sent = { lines: [] };
  const FIELDS = keyFields('edit-', 'edit-', meta, sent, {});
  const errors = fieldErrors($('edit-form'), FIELDS, $('edit-error'));
  let key = null; // the record as the dialog opened it
  let access = null;

  const id = (k) => encodeURIComponent(k.id);

  // ---- suspend and resume ----------------------------------------------------

  async function setEnabled(k, on) {
    try {
      const after = await ctx.api('POST', `/v1/keys/${id(k)}/${on ? 'resume' : 'suspend'}`);
      await ctx.changed(after, on
        ? `Resumed "${k.name}": it works again.`
        : `Suspended "${k.name}": every gateway refuses it until it is resumed.`, on ? 'Suspend' : 'Resume');
    } catch (e) {
      ctx.failed(e, ctx.statusLine());
    }
  }

  // ---- the dialog ------------------------------------------------------------

  function open(k, opener) {
    key = k;
    $('edit-form').reset();
    errors.clear();
    $('edit-title').textContent = `Edit key \u201c${k.name}\u201d`;
    $('edit-owner').textContent = `${k.id}, user ${k.user_id}, business ${k.business_id} (the owner does not change)`;
    $('edit-name').value = k.name;
    $('edit-description').value = k.description;
    access = accessPicker('edit-', ctx.policy());
    access.set(k);
    meta.set(k.metadata);
    $('edit-allowed-ips').value = k.allowed_ips.join('\n');
    $('edit-expires-now').textContent = `Now: ${when(k.expires_at, 'never')}.`;
    $('edit-custom-field').hidden = true;
    ctx.openDialog($('edit-dialog'), opener);
    $('edit-name').focus();
  }

  $('edit-expires').addEventListener('change', () => {
    const custom = $('edit-expires').value === 'custom';
    $('edit-custom-field').hidden = !custom;
    if (custom) $('edit-expires-at').focus();
  });
  $('edit-cancel').addEventListener('click', () => $('edit-dialog').close());

  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const sorted = (xs) => [...xs].sort();
  const grantSet = (gs) => sorted(gs.flatMap((g) => g.locations.map((l) => `${g.role}@${l}`)));
  const metaSorted = (m) => Object.entries(m).sort(([a], [b]) => (a < b ? -1 : 1));

  // The PATCH body: only what differs from the record the dialog opened with.
  function changes(k) {
    const body = {};
    const problems = {};
    const name = $('edit-name').value.trim();
    if (!name) problems.name = 'Name is required.';
    else if (name !== k.name) body.name = name;
    const description = $('edit-description').value.trim();
    if (description !== k.description) body.description = description;
    const a = access.read();
    if (!same(sorted(a.scopes), sorted(k.scopes))) body.scopes = a.scopes;
    if (!same(sorted(a.locations), sorted(k.locations))) body.locations = a.locations;
    if (!same(grantSet(a.grants), grantSet(k.grants))) body.grants = a.grants;
    const m = meta.read();
    if (m.error) problems.metadata = m.error;
    else if (!same(metaSorted(m.value), metaSorted(k.metadata))) body.metadata = m.value;
    const ips = readIps($('edit-allowed-ips'));
    if (ips.error) problems.allowed_ips = ips.error;
    else if (!same(ips.list, k.allowed_ips)) body.allowed_ips = ips.list;
    sent.lines = ips.lines;
    const expiry = readExpiry($('edit-expires'), $('edit-expires-at'));
    if (expiry.error) problems.expires_at = expiry.error;
    else Object.assign(body, expiry);
    return { body, problems };
  }

  const WORDS = {
    name: 'name', description: 'description', scopes: 'scopes', locations: 'locations', grants: 'roles by location',
    metadata: 'metadata', allowed_ips: 'allowed IPs', expires_in: 'expiry', expires_at: 'expiry',
  };

  $('edit-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const k = key;
    if (!k) return;
    errors.clear();
    const { body, problems } = changes(k);
    if (errors.show(problems)) return;
    const fields = Object.keys(body);
    if (fields.length === 0) {
      $('edit-error').textContent = 'Nothing changed: change a field, or press Cancel.';
      return;
    }
    try {
      const after = await ctx.api('PATCH', `/v1/keys/${id(k)}`, body);
      $('edit-dialog').close();
      const what = [...new Set(fields.map((f) => WORDS[f]))].join(', ');
      await ctx.changed(after, `Saved "${after.name}": changed ${what}. Every gateway applies it within a second.`, 'Edit');
    } catch (e) {
      const fieldError = e.status === 400 || e.status === 403 ? errors.server(e.message) : null;
      if (fieldError) errors.show(fieldError);
      else ctx.failed(e, $('edit-error'));
    }
  });

  return {
    // Edit and Suspend or Resume for `k`, made by app.js's `button(text, class, act)`.
    buttons(k, button) {
      const out = [button('Edit', '', open)];
      if (k.status === 'active') out.push(button('Suspend', '', (x) => setEnabled(x, false)));
      else if (!k.enabled) out.push(button('Resume', '', (x) => setEnabled(x, true)));
      return out;
    },
  };
};
