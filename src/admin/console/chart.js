// keygate console: a key's usage and quota. Charts are plain SVG (no library, no inline
// style: colours come from app.css classes): a sparkline of the last 7 days in the key
// list (`usage.spark`), requests per hour stacked allowed/refused in the detail view
// (`usage.detail`), each with a text label for screen readers; `usage.quotaText` says
// what is left of a key's quota.
(() => {
  'use strict';
  const NS = 'http://www.w3.org/2000/svg';

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  // A 96×24 line of each day's requests (allowed and refused), scaled to the busiest.
  function sparkline(buckets) {
    const w = 96;
    const h = 24;
    const totals = buckets.map((b) => b.allowed + b.refused);
    const max = Math.max(1, ...totals);
    const step = totals.length > 1 ? w / (totals.length - 1) : w;
    const points = totals.map((t, i) => `${(i * step).toFixed(1)},${(h - 2 - (t / max) * (h - 4)).toFixed(1)}`);
    const sum = totals.reduce((a, b) => a + b, 0);
    const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: 'sparkline', role: 'img' });
    root.setAttribute('aria-label', `${sum} requests in the last ${totals.length} days`);
    root.append(svg('polyline', { points: points.join(' '), class: 'spark-line' }));
    return root;
  }

  // Stacked bars, one per bucket: allowed (bottom) and refused (top).
  function stacked(buckets) {
    const w = 720;
    const h = 180;
    const pad = { left: 40, bottom: 22, top: 8 };
    const inner = { w: w - pad.left, h: h - pad.bottom - pad.top };
    const max = Math.max(1, ...buckets.map((b) => b.allowed + b.refused));
    const bw = inner.w / Math.max(1, buckets.length);
    const y = (n) => pad.top + inner.h - (n / max) * inner.h;
    const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, class: 'usage-chart', role: 'img' });
    const allowed = buckets.reduce((a, b) => a + b.allowed, 0);
    const refused = buckets.reduce((a, b) => a + b.refused, 0);
    root.setAttribute('aria-label', `${allowed} allowed and ${refused} refused requests in ${buckets.length} hours`);
    root.append(svg('line', { x1: pad.left, y1: y(0), x2: w, y2: y(0), class: 'axis' }));
    for (const n of [0, max]) {
      const label = svg('text', { x: pad.left - 4, y: y(n) + 4, class: 'axis-label', 'text-anchor': 'end' });
      label.textContent = String(n);
      root.append(label);
    }
    buckets.forEach((b, i) => {
      const x = pad.left + i * bw;
      if (b.allowed) {
        root.append(svg('rect', { x, y: y(b.allowed), width: Math.max(1, bw - 1), height: y(0) - y(b.allowed), class: 'bar-allowed' }));
      }
      if (b.refused) {
        const top = b.allowed + b.refused;
        root.append(svg('rect', { x, y: y(top), width: Math.max(1, bw - 1), height: y(b.allowed) - y(top), class: 'bar-refused' }));
      }
      // A date under each day's first hour.
      if (b.start.endsWith('T00:00:00Z')) {
        const label = svg('text', { x, y: h - 6, class: 'axis-label' });
        label.textContent = b.start.slice(5, 10);
        root.append(label);
      }
    });
    return root;
  }

  const { $, el, when } = window.keygate;

  // A key's last 7 days as a sparkline, filled in when its usage arrives.
  function spark(api, k) {
    const holder = el('span', { class: 'spark small muted', text: '\u2026' });
    api('GET', `/v1/keys/${encodeURIComponent(k.id)}/usage?granularity=day`)
      .then((u) => holder.replaceChildren(sparkline(u.buckets)))
      .catch(() => { holder.textContent = '\u2014'; });
    return holder;
  }

  // The key's requests per hour over the last 7 days, stacked allowed/refused.
  let usageOf = null; // the key whose chart is being drawn
  async function detail(api, k) {
    usageOf = k.id;
    const box = $('detail-usage');
    box.replaceChildren();
    $('detail-usage-summary').textContent = 'Loading usage\u2026';
    try {
      const u = await api('GET', `/v1/keys/${encodeURIComponent(k.id)}/usage`);
      if (usageOf !== k.id) return; // another key is shown now
      box.replaceChildren(stacked(u.buckets));
      const codes = {};
      for (const b of u.buckets) for (const [c, n] of Object.entries(b.refusals)) codes[c] = (codes[c] || 0) + n;
      const why = Object.entries(codes).map(([c, n]) => `${c} ${n}`).join(', ');
      $('detail-usage-summary').textContent = `${u.allowed} allowed, ${u.refused} refused${why ? ` (${why})` : ''}; counts arrive within a few seconds.`;
    } catch (e) {
      $('detail-usage-summary').textContent = `Usage could not be read: ${e.message || e}`;
    }
  }

  // A quota as GET /v1/keys/{id} shows it: what is left, of what, until when.
  function quotaText(q) {
    if (!q) return 'none';
    const from = q.plan ? ` (plan ${q.plan})` : '';
    if (q.credits !== undefined) {
      return `${q.remaining ?? '?'} of ${q.credits} credits left${from}; an admin refills them`;
    }
    return `${q.remaining ?? '?'} of ${q.limit} per ${q.period} left, refills ${when(q.resets_at, '')}${from}`;
  }

  window.keygate.usage = { spark, detail, quotaText };
})();
