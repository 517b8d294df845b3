// keygate console: the parts of a key's form that "Create key" and "Edit key" share:
// the scope, location and role x location pickers, the metadata rows, the IP
// allowlist, the expiry picker, and field errors. Loaded before edit.js and app.js; it
// defines `window.keygate` and touches no page element until asked.
//
// Invariants: every text is put into the page with textContent, never as HTML; the
// client-side checks repeat the admin API's rules (metadata names [a-z0-9-]{1,32},
// values of at most 256 visible ASCII characters, 16 entries, 1 KiB; addresses and
// CIDRs, IPv4 and IPv6, at most 64) so a person hears of a mistake at once, but the
// server stays the authority: its 400 naming a field (`allowed_ips[1]: ...`) lands
// next to that field too, in the form's words ("Allowed IPs line 2: ...").
'use strict';

window.keygate = (() => {
  const $ = (id) => document.getElementById(id);

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

  function slug(text) {
    return text.replace(/[^A-Za-z0-9_-]+/g, '-');
  }

  function when(ts, none) {
    if (!ts) return none;
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return ts;
    return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  }

  function checkbox(id, value, labelText, describedBy) {
    const input = el('input', { type: 'checkbox', id, value });
    if (describedBy) input.setAttribute('aria-describedby', describedBy);
    return [input, el('label', { for: id, text: labelText })];
  }

  const BUILTIN_SCOPES = [
    ['keygate:admin', 'Manage every key of its own business through this API and console'],
    ['keygate:self', 'Manage its own user\u2019s keys through this API and console'],
  ];

  // ---- scopes, locations, roles by location --------------------------------

  // The pickers whose element ids start with `p` ('' for Create, 'edit-' for Edit).
  // The role x location grid offers only the locations chosen for the key (all of the
  // policy's, plus "*", when "All locations (*)" is ticked); ticks survive a rebuild.
  function accessPicker(p, policy) {
    const scopes = [...policy.scopes.map((s) => [s.name, s.description]), ...BUILTIN_SCOPES];
    const list = $(`${p}scope-list`);
    list.replaceChildren();
    scopes.forEach(([name, description], i) => {
      const descId = `${p}scope-desc-${i}`;
      const [input, label] = checkbox(`${p}scope-${i}`, name, name, descId);
      list.append(el('div', { class: 'check' }, input, label, el('span', { class: 'desc', id: descId, text: description })));
    });
    const locs = $(`${p}location-list`);
    locs.replaceChildren();
    const [allInput, allLabel] = checkbox(`${p}loc-all`, '*', 'All locations (*)');
    locs.append(el('div', { class: 'check' }, allInput, allLabel));
    policy.locations.forEach((l, i) => {
      const [input, label] = checkbox(`${p}loc-${i}`, l, l);
      locs.append(el('div', { class: 'check' }, input, label));
    });
    const ticked = (box) => [...$(box).querySelectorAll('input:checked')];

    function grid(keep) {
      const chosen = ticked(`${p}location-list`).map((i) => i.value);
      const columns = chosen.includes('*') ? [...policy.locations, '*'] : policy.locations.filter((l) => chosen.includes(l));
      const on = keep || new Set(ticked(`${p}grant-body`).map((i) => `${i.dataset.role}@${i.dataset.location}`));
      const head = $(`${p}grant-head`);
      const body = $(`${p}grant-body`);
      head.replaceChildren();
      body.replaceChildren();
      const none = columns.length === 0 || policy.roles.length === 0;
      $(`${p}grant-grid`).hidden = none;
      $(`${p}grant-empty`).hidden = !none;
      $(`${p}grant-empty`).textContent = policy.roles.length === 0
        ? 'The policy declares no roles.'
        : 'Choose the key\u2019s locations above first.';
      if (none) return;
      head.append(el('tr', {}, el('th', { scope: 'col', text: 'Role' }),
        ...columns.map((c) => el('th', { scope: 'col', text: c === '*' ? 'All (*)' : c }))));
      policy.roles.forEach((r, ri) => {
        const tr = el('tr', {}, el('th', { scope: 'row' }, el('span', { text: r.name }),
          el('span', { class: 'small muted block', text: r.scopes.join(', ') })));
        for (const c of columns) {
          const input = el('input', { type: 'checkbox', id: `${p}grant-${ri}-${slug(c)}`, 'aria-label': `${r.name} at ${c === '*' ? 'all locations' : c}` });
          input.dataset.role = r.name;
          input.dataset.location = c;
          input.checked = on.has(`${r.name}@${c}`);
          tr.append(el('td', { class: 'center' }, input));
        }
        body.append(tr);
      });
    }

    for (const input of locs.querySelectorAll('input')) input.addEventListener('change', () => grid());
    grid();
    return {
      // Ticks what key record `k` holds.
      set(k) {
        for (const i of list.querySelectorAll('input')) i.checked = k.scopes.includes(i.value);
        for (const i of locs.querySelectorAll('input')) i.checked = k.locations.includes(i.value);
        grid(new Set(k.grants.flatMap((g) => g.locations.map((l) => `${g.role}@${l}`))));
      },
      read() {
        const byRole = new Map();
        for (const i of ticked(`${p}grant-body`)) {
          if (!byRole.has(i.dataset.role)) byRole.set(i.dataset.role, []);
          byRole.get(i.dataset.role).push(i.dataset.location);
        }
        return {
          scopes: ticked(`${p}scope-list`).map((i) => i.value),
          locations: ticked(`${p}location-list`).map((i) => i.value),
          grants: [...byRole].map(([role, locations]) => ({ role, locations })),
        };
      },
    };
  }

  // ---- metadata ------------------------------------------------------------

  const META_NAME = /^[a-z0-9-]{1,32}$/;
  const META_VALUE = /^[\x21-\x7e]{0,256}$/;
  const NAME_RULE = 'use 1 to 32 characters from a-z, 0-9 and -';

  // Rows of name/value at `${p}metadata-rows`, added by `${p}metadata-add`.
  function metadataEditor(p) {
    const rows = $(`${p}metadata-rows`);
    const add = $(`${p}metadata-add`);
    const errorId = `${p}metadata-error`;

    function renumber() {
      [...rows.children].forEach((r, i) => {
        const [name, value, remove] = r.querySelectorAll('input, button');
        name.setAttribute('aria-label', `Metadata name ${i + 1}`);
        value.setAttribute('aria-label', `Metadata value ${i + 1}`);
        remove.setAttribute('aria-label', `Remove metadata entry ${i + 1}`);
      });
      $(`${p}metadata-empty`).hidden = rows.children.length > 0;
      $(`${p}metadata-head`).hidden = rows.children.length === 0;
    }

    function row(name, value) {
      const input = (cls, v) => el('input', { class: cls, value: v, autocomplete: 'off', spellcheck: false, 'aria-describedby': errorId });
      const r = el('div', { class: 'meta-row' }, input('meta-name', name), input('meta-value', value));
      const remove = el('button', { type: 'button', text: 'Remove' });
      remove.addEventListener('click', () => {
        const next = r.nextElementSibling || r.previousElementSibling;
        r.remove();
        renumber();
        (next ? next.querySelector('input') : add).focus();
      });
      r.append(remove);
      rows.append(r);
      return r;
    }

    add.onclick = () => {
      row('', '').querySelector('input').focus();
      renumber();
    };
    return {
      set(metadata) {
        rows.replaceChildren();
        for (const [n, v] of Object.entries(metadata || {})) row(n, v);
        renumber();
      },
      // { value: {name: value}, error: null | {text, focus} }; rows left blank are skipped.
      read() {
        const value = {};
        let bytes = 0;
        let n = 0;
        for (const r of rows.children) {
          const [nameEl, valueEl] = r.querySelectorAll('input');
          const name = nameEl.value.trim();
          const v = valueEl.value.trim();
          if (!name && !v) continue;
          const fail = (text, focus) => ({ value, error: { text: `Metadata: ${text}`, focus } });
          if (!name) return fail(`entry ${n + 1} needs a name: ${NAME_RULE}`, nameEl);
          if (!META_NAME.test(name)) return fail(`\`${name}\` is not a valid name: ${NAME_RULE}`, nameEl);
          if (Object.hasOwn(value, name)) return fail(`\`${name}\` is given twice; each name once`, nameEl);
          if (!META_VALUE.test(v)) return fail(`the value of \`${name}\` must be at most 256 visible ASCII characters`, valueEl);
          value[name] = v;
          bytes += name.length + v.length;
          n += 1;
          if (n > 16) return fail('at most 16 entries are allowed', nameEl);
        }
        if (bytes > 1024) {
          return { value, error: { text: `Metadata: holds ${bytes} bytes of names and values; at most 1024 are allowed`, focus: rows.querySelector('input') } };
        }
        return { value, error: null };
      },
      // The name input of the entry a server message names (`plan`), else the first.
      named(message) {
        const m = /`([^`]*)`/.exec(message);
        const inputs = [...rows.querySelectorAll('.meta-name')];
        return (m && inputs.find((i) => i.value.trim() === m[1])) || inputs[0] || add;
      },
    };
  }

  // ---- allowed IPs ---------------------------------------------------------

  const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

  // The browser's own IPv6 parser (the URL host one) decides IPv6 syntax.
  function isIpv6(text) {
    if (!/^[0-9A-Fa-f:.]+$/.test(text) || !text.includes(':')) return false;
    try {
      return Boolean(new URL(`http://[${text}]/`));
    } catch (_) {
      return false;
    }
  }

  function isIpNet(text) {
    const parts = text.split('/');
    if (parts.length > 2 || (parts.length === 2 && !/^\d{1,3}$/.test(parts[1]))) return false;
    const max = V4.test(parts[0]) ? 32 : isIpv6(parts[0]) ? 128 : -1;
    return max > 0 && (parts.length === 1 || Number(parts[1]) <= max);
  }

  // The textarea `textarea`, one address or CIDR per line: { list, lines, error }, where
  // lines[i] is the line number of list[i] (so the server's `allowed_ips[i]` finds it).
  function readIps(textarea) {
    const list = [];
    const lines = [];
    const all = textarea.value.split('\n');
    for (let i = 0; i < all.length; i += 1) {
      const t = all[i].trim();
      if (!t) continue;
      if (!isIpNet(t)) {
        return { list, lines, error: { text: `Allowed IPs line ${i + 1}: \`${t}\` is not an IP address or CIDR (like 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32)`, focus: textarea, line: i + 1 } };
      }
      list.push(t);
      lines.push(i + 1);
    }
    if (new Set(list).size > 64) {
      return { list, lines, error: { text: `Allowed IPs: has ${new Set(list).size} entries; at most 64 are allowed (use CIDRs)`, focus: textarea } };
    }
    return { list, lines, error: null };
  }

  // Selects line `n` of `textarea`, so the entry in error is the one in view.
  function selectLine(textarea, n) {
    const all = textarea.value.split('\n');
    const start = all.slice(0, n - 1).reduce((s, l) => s + l.length + 1, 0);
    textarea.setSelectionRange(start, start + (all[n - 1] || '').length);
  }

  // ---- expiry --------------------------------------------------------------

  // The select `select` ('' = unchanged, 'custom' = the datetime-local `at`), as the
  // admin API's field: {expires_in} | {expires_at} | {} | {error}.
  function readExpiry(select, at) {
    const v = select.value;
    if (!v) return {};
    if (v !== 'custom') return { expires_in: v };
    const d = at.value ? new Date(at.value) : null;
    if (!d || Number.isNaN(d.getTime())) return { error: 'Custom expiry: pick a date and time.' };
    return { expires_at: d.toISOString().replace(/\.\d{3}Z$/, 'Z') };
  }

  // ---- field errors --------------------------------------------------------

  // `fields`: the form's fields by the admin API's names, in form order, each
  // {id, label, group?, server?(rest, index) -> {text, focus}}; an error shows in
  // `${id}-error`, the first one in form order gets the focus.
  function fieldErrors(form, fields, general) {
    return {
      clear() {
        for (const { id } of Object.values(fields)) {
          const box = $(`${id}-error`);
          box.textContent = '';
          box.hidden = true;
        }
        for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
        general.textContent = '';
      },
      // errors: {field: text | {text, focus, line}}.
      show(errors) {
        let first = null;
        for (const [field, { id, group }] of Object.entries(fields)) {
          const err = errors[field];
          if (!err) continue;
          const box = $(`${id}-error`);
          box.textContent = typeof err === 'string' ? err : err.text;
          box.hidden = false;
          const target = err.focus || $(id) || (group && $(group).querySelector('input')) || box;
          if (target !== box) target.setAttribute('aria-invalid', 'true');
          if (!first) {
            first = target;
            if (err.line) selectLine(target, err.line);
          }
        }
        if (first) {
          if (first.tagName === 'P' && !first.hasAttribute('tabindex')) first.tabIndex = -1;
          first.focus();
        }
        return first !== null;
      },
      // "user_id: must be ..." or "allowed_ips[1]: ..." from the admin API, as {field: error}.
      server(message) {
        const m = /^([a-z_]+)(?:\[(\d+)\])?(?:[.a-z_]*): (.*)$/s.exec(message || '');
        const f = m && fields[m[1]];
        if (!f) return null;
        const index = m[2] === undefined ? null : Number(m[2]);
        return { [m[1]]: f.server ? f.server(m[3], index) : `${f.label} ${m[3]}` };
      },
    };
  }

  // A key form's fields by the admin API's names, in form order: `f` starts the
  // fields' ids ('new-', 'edit-'), `l` the pickers' ('' for Create), `owner` goes after
  // Description (Create's User ID and Business ID); metadata and allowlist errors are
  // said in their own words, at the entry or line they name.
  function keyFields(f, l, meta, ips, owner) {
    return {
      name: { id: `${f}name`, label: 'Name' },
      description: { id: `${f}description`, label: 'Description' },
      ...owner,
      scopes: { id: `${f}scopes`, label: 'Scopes', group: `${l}scope-list` },
      locations: { id: `${f}locations`, label: 'Locations', group: `${l}location-list` },
      grants: { id: `${f}grants`, label: 'Roles by location', group: `${l}grant-body` },
      metadata: { id: `${f}metadata`, label: 'Metadata', group: `${f}metadata-rows`, server: (rest) => ({ text: `Metadata: ${rest}`, focus: meta.named(rest) }) },
      allowed_ips: {
        id: `${f}allowed-ips`,
        label: 'Allowed IPs',
        server: (rest, i) => {
          const line = i === null ? null : ips.lines[i] || i + 1;
          return { text: line === null ? `Allowed IPs: ${rest}` : `Allowed IPs line ${line}: ${rest}`, focus: $(`${f}allowed-ips`), line };
        },
      },
      expires_in: { id: `${f}expires`, label: 'Expires' },
      expires_at: { id: `${f}expires-at`, label: 'Custom expiry' },
    };
  }

  return {
    $, el, slug, when, accessPicker, metadataEditor, readIps, readExpiry, fieldErrors, keyFields,
  };
})();
