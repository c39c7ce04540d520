// vigil status page: renders /api/v1/status (and /api/v1/probes/NAME for the detail view) with
// the DOM API only (text goes in as textContent and is never parsed as HTML), and stays
// live through server-sent events from /api/v1/events.
'use strict';
(function () {
  var SVGNS = 'http://www.w3.org/2000/svg';
  var LEVELS = {
    up: { icon: '\u2714', text: 'UP' },
    degraded: { icon: '\u25B2', text: 'DEGRADED' },
    down: { icon: '\u2716', text: 'DOWN' },
    pending: { icon: '\u2026', text: 'PENDING' }
  };
  var status = null;
  var detail = null;
  var lastFetch = 0;
  var timer = null;

  function $(id) { return document.getElementById(id); }

  // el('div', {class: 'x'}, child, 'text', ...): strings become text nodes.
  function el(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.append(c);
    }
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    return e;
  }
  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      if (attrs[k] === null || attrs[k] === undefined) return;
      if (k === 'text') e.textContent = String(attrs[k]);
      else e.setAttribute(k, String(attrs[k]));
    });
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  function levelBadge(level) {
    var l = LEVELS[level] || LEVELS.pending;
    return el('span', { class: 'level ' + (LEVELS[level] ? level : 'pending') },
      el('span', { 'aria-hidden': 'true', text: l.icon }), l.text);
  }
  function pct(ratio) {
    if (ratio === null || ratio === undefined) return '\u2013';
    var p = ratio * 100;
    return (p === 100 ? '100' : p >= 99.99 ? p.toFixed(3) : p.toFixed(2)) + '%';
  }
  function ms(seconds) {
    if (seconds === null || seconds === undefined) return '\u2013';
    var m = seconds * 1000;
    return m >= 1000 ? (m / 1000).toFixed(2) + ' s' : m >= 10 ? m.toFixed(0) + ' ms' : m.toFixed(1) + ' ms';
  }
  function ago(iso) {
    if (!iso) return '';
    var s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return Math.round(s) + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return (s / 3600).toFixed(1) + ' h ago';
    return (s / 86400).toFixed(1) + ' days ago';
  }
  function when(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    return d.toLocaleString();
  }
  function span(seconds) {
    if (seconds < 90) return Math.round(seconds) + ' s';
    if (seconds < 5400) return Math.round(seconds / 60) + ' min';
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + ' h';
    return (seconds / 86400).toFixed(1) + ' days';
  }

  // The bar: one cell per period; colour and a tooltip say the same.
  function cellClass(runs, degraded, down) {
    if (!runs) return 'none';
    if (down === 0 && degraded === 0) return 'up';
    if ((runs - down) / runs >= 0.99) return 'degraded';
    return 'down';
  }
  function bar(data, firstIso, periodSeconds, label) {
    var n = data.runs.length;
    var gap = 2, w = 8, height = 26;
    var box = svg('svg', {
      class: 'bar', viewBox: '0 0 ' + (n * (w + gap) - gap) + ' ' + height,
      preserveAspectRatio: 'none', role: 'img', 'aria-label': label
    });
    var first = Date.parse(firstIso);
    var bad = 0;
    for (var i = 0; i < n; i++) {
      var runs = data.runs[i], down = data.down[i], degraded = data.degraded[i];
      var cls = cellClass(runs, degraded, down);
      if (cls === 'down' || cls === 'degraded') bad++;
      var r = svg('rect', { x: i * (w + gap), y: 0, width: w, height: height, rx: 1.5, class: cls });
      var start = new Date(first + i * periodSeconds * 1000);
      var what = periodSeconds >= 86400 ? start.toISOString().slice(0, 10) : start.toLocaleString();
      var t = runs ? what + ': ' + pct((runs - down) / runs) + ' available, ' + down + ' down and ' +
        degraded + ' degraded of ' + runs + ' runs' : what + ': no data';
      r.append(svg('title', { text: t }));
      box.append(r);
    }
    return { svg: box, bad: bad };
  }

  function summaryLine(s) {
    var p = $('summary');
    clear(p);
    [['up', s.up], ['degraded', s.degraded], ['down', s.down]].forEach(function (x, i) {
      if (i) p.append(', ');
      p.append(el('span', { class: 'n', text: x[1] }), ' ' + x[0]);
    });
    if (s.pending) p.append(', ', el('span', { class: 'n', text: s.pending }), ' pending');
    p.setAttribute('data-down', String(s.down));
  }

  function freshness(f, level) {
    if (!f) return null;
    var age = Math.max(0, (Date.now() - Date.parse(f.newest)) / 1000);
    var share = Math.min(1, age / f.threshold_seconds);
    var fill = el('span', { class: level === 'down' ? 'down' : level === 'degraded' ? 'degraded' : 'up' });
    fill.style.width = (share * 100).toFixed(1) + '%';
    var text = 'Newest record ' + span(age) + ' old; ' +
      (f.warn_seconds ? 'degraded after ' + span(f.warn_seconds) + ', ' : '') + 'down after ' + span(f.threshold_seconds);
    return el('div', { class: 'note fresh' }, el('span', { text: text }),
      el('span', { class: 'meter', role: 'img', 'aria-label': Math.round(share * 100) + '% of the threshold' }, fill));
  }

  function probeCard(p) {
    var li = el('li', { class: 'probe level-' + p.level, 'data-probe': p.name, 'data-level': p.level });
    var head = el('div', { class: 'probe-head' },
      levelBadge(p.level),
      el('a', { class: 'probe-name', href: '#/probes/' + encodeURIComponent(p.name), text: p.name }),
      el('span', { class: 'target', text: p.target }));
    var facts = el('div', { class: 'facts' },
      el('span', {}, 'latency ', el('b', { text: ms(p.latency_seconds) })),
      el('span', {}, '24 h ', el('b', { text: pct(p.uptime['24h'].ratio) })),
      el('span', {}, '7 d ', el('b', { text: pct(p.uptime['7d'].ratio) })),
      el('span', {}, '30 d ', el('b', { text: pct(p.uptime['30d'].ratio) })));
    li.append(head, facts);
    if (p.level !== 'up' && p.level !== 'pending') {
      var why = (p.reason || '') + (p.detail ? ': ' + p.detail : '');
      li.append(el('div', { class: 'note ' + p.level }, el('b', { text: LEVELS[p.level].text }),
        p.since ? ' since ' + when(p.since) + ' (' + ago(p.since) + ')' : '', why ? ' \u2014 ' + why : ''));
    } else if (p.last_failure) {
      var f = p.last_failure;
      li.append(el('div', { class: 'note' }, 'Last failure ' + ago(f.at) + ' (' + when(f.at) + '): ' + f.reason +
        (f.detail ? ': ' + f.detail : '')));
    }
    var fr = freshness(p.freshness, p.level);
    if (fr) li.append(fr);
    var b = bar(p.bar, status.bar.first, status.bar.period_seconds,
      'Uptime of ' + p.name + ' over ' + status.bar.count + ' days');
    li.append(el('div', { class: 'bar-wrap' }, b.svg,
      el('div', { class: 'bar-legend' }, el('span', { text: status.bar.count + ' days ago' }),
        el('span', { text: b.bad ? b.bad + (b.bad === 1 ? ' day' : ' days') + ' not fully up' : '' }), el('span', { text: 'today' }))));
    return li;
  }

  function currentGroup() {
    return new URLSearchParams(location.search).get('group');
  }

  function renderList(main) {
    var only = currentGroup();
    var nav = $('groups');
    clear(nav);
    var grouped = status.group_by !== null && status.group_by !== undefined;
    nav.hidden = !grouped || status.groups.length < 2;
    if (grouped) {
      nav.append(el('a', { href: './', 'aria-current': only === null ? 'page' : null, text: 'All' }));
      status.groups.forEach(function (g) {
        var name = g.name === null ? '' : g.name;
        nav.append(el('a', {
          href: '?group=' + encodeURIComponent(name), 'aria-current': only === name ? 'page' : null,
          text: g.name === null ? 'no ' + status.group_by : g.name
        }));
      });
    }
    var shown = 0;
    status.groups.forEach(function (g) {
      var name = g.name === null ? '' : g.name;
      if (only !== null && only !== name) return;
      var section = el('section', { class: 'group', 'data-group': name });
      if (grouped) {
        var s = g.summary;
        section.append(el('h2', {}, el('span', { class: 'group-name', text: g.name === null ? 'no ' + status.group_by : g.name }),
          el('span', { class: 'target', text: '  ' + s.up + ' up, ' + s.degraded + ' degraded, ' + s.down + ' down' })));
      }
      var ul = el('ul', { class: 'probes' });
      g.probes.forEach(function (p) { ul.append(probeCard(p)); shown++; });
      section.append(ul);
      main.append(section);
    });
    if (!shown) main.append(el('p', { class: 'empty', text: 'No probes to show.' }));
  }

  function stat(k, v) { return el('div', { class: 'stat' }, el('div', { class: 'k', text: k }), el('div', { class: 'v', text: v })); }

  function chart(runs, p) {
    var W = 800, H = 220, L = 56, R = 10, T = 10, B = 24;
    var box = svg('svg', { class: 'chart', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Latency of ' + p.name });
    var points = runs.slice().reverse();
    if (points.length < 2) {
      var t = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'Not enough runs for a chart yet.' });
      box.append(t);
      return box;
    }
    var t0 = Date.parse(points[0].at), t1 = Date.parse(points[points.length - 1].at);
    var max = 0;
    points.forEach(function (r) { if (r.level !== 'down' && r.latency_seconds > max) max = r.latency_seconds; });
    if (max <= 0) max = p.degraded_after_seconds;
    max *= 1.15;
    var x = function (t) { return L + (W - L - R) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5); };
    var y = function (v) { return T + (H - T - B) * (1 - Math.min(v, max) / max); };
    [0, 0.5, 1].forEach(function (f) {
      box.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
      box.append(svg('text', { x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end', text: ms(max * f) }));
    });
    if (p.degraded_after_seconds < max) {
      box.append(svg('line', { class: 'threshold', x1: L, x2: W - R, y1: y(p.degraded_after_seconds), y2: y(p.degraded_after_seconds) }));
    }
    if (p.down_after_seconds < max) {
      box.append(svg('line', { class: 'threshold down', x1: L, x2: W - R, y1: y(p.down_after_seconds), y2: y(p.down_after_seconds) }));
    }
    var d = '';
    points.forEach(function (r) {
      if (r.level === 'down') return;
      d += (d ? ' L' : 'M') + x(Date.parse(r.at)).toFixed(1) + ' ' + y(r.latency_seconds).toFixed(1);
    });
    if (d) box.append(svg('path', { class: 'line', d: d }));
    points.forEach(function (r) {
      if (r.level === 'up') return;
      var c = svg('circle', { class: r.level, cx: x(Date.parse(r.at)), cy: r.level === 'down' ? T + 4 : y(r.latency_seconds), r: 3.5 });
      c.append(svg('title', { text: when(r.at) + ': ' + LEVELS[r.level].text + (r.reason ? ' (' + r.reason + ')' : '') }));
      box.append(c);
    });
    box.append(svg('text', { x: L, y: H - 6, text: new Date(t0).toLocaleString() }));
    box.append(svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end', text: new Date(t1).toLocaleString() }));
    return box;
  }

  function renderDetail(main, name) {
    var p = null;
    status.groups.forEach(function (g) { g.probes.forEach(function (q) { if (q.name === name) p = q; }); });
    main.append(el('p', {}, el('a', { href: '#', text: '\u2190 All probes' })));
    if (!p) { main.append(el('p', { class: 'empty', text: 'No probe named ' + name + '.' })); return; }
    var section = el('section', { class: 'detail', 'data-probe': p.name, 'data-level': p.level });
    section.append(el('div', { class: 'detail-head' }, levelBadge(p.level), el('h2', { text: p.name }),
      el('span', { class: 'target', text: p.kind + ' \u00b7 ' + p.target })));
    var labels = Object.keys(p.labels).map(function (k) { return k + '=' + p.labels[k]; }).join(', ');
    if (labels) section.append(el('p', { class: 'target', text: labels }));
    if (p.level !== 'up' && p.level !== 'pending') {
      section.append(el('p', { class: 'note ' + p.level }, el('b', { text: LEVELS[p.level].text }),
        p.since ? ' since ' + when(p.since) : '', p.reason ? ' \u2014 ' + p.reason + (p.detail ? ': ' + p.detail : '') : ''));
    }
    var day = p.uptime['24h'];
    section.append(el('div', { class: 'stats' },
      stat('latency now', ms(p.latency_seconds)),
      stat('uptime 24 h', pct(day.ratio)), stat('uptime 7 d', pct(p.uptime['7d'].ratio)), stat('uptime 30 d', pct(p.uptime['30d'].ratio)),
      stat('down / runs 24 h', day.down + ' / ' + day.runs),
      stat('mean 24 h', ms(day.latency_avg_seconds)), stat('p95 24 h', ms(day.latency_p95_seconds)), stat('max 24 h', ms(day.latency_max_seconds))));
    var fr = freshness(p.freshness, p.level);
    if (fr) section.append(fr);
    if (p.last_failure) {
      var f = p.last_failure;
      section.append(el('p', { class: 'note' }, 'Last failure ' + ago(f.at) + ' (' + when(f.at) + '): ' + f.reason + (f.detail ? ': ' + f.detail : '')));
    }
    if (detail && detail.probe.name === p.name) {
      section.append(el('h2', { text: 'Last 24 hours' }));
      var b = bar(detail.hours, detail.hours_first, 3600, 'Uptime of ' + p.name + ' by hour');
      section.append(el('div', { class: 'bar-wrap' }, b.svg,
        el('div', { class: 'bar-legend' }, el('span', { text: '24 h ago' }), el('span', { text: 'now' }))));
      section.append(el('h2', { text: 'Latency' }), chart(detail.runs, p));
      section.append(el('h2', { text: 'Recent runs' }));
      var table = el('table', { class: 'runs' },
        el('thead', {}, el('tr', {}, el('th', { text: 'finished' }), el('th', { text: 'level' }),
          el('th', { text: 'latency' }), el('th', { class: 'opt', text: 'reason' }))));
      var body = el('tbody');
      detail.runs.slice(0, 50).forEach(function (r) {
        body.append(el('tr', { 'data-level': r.level }, el('td', { text: when(r.at) }), el('td', {}, levelBadge(r.level)),
          el('td', { text: ms(r.latency_seconds) }),
          el('td', { class: 'opt detail', text: (r.reason || '') + (r.detail ? ': ' + r.detail : '') })));
      });
      table.append(body);
      section.append(detail.runs.length ? table : el('p', { class: 'empty', text: 'No runs stored yet.' }));
    } else {
      section.append(el('p', { class: 'empty', text: 'Loading runs\u2026' }));
    }
    main.append(section);
  }

  function renderContainers() {
    var box = $('containers');
    var list = status.containers;
    box.hidden = !Array.isArray(list);
    if (!Array.isArray(list)) return;
    var body = $('containers-body');
    clear(body);
    if (!list.length) { body.append(el('p', { class: 'empty', text: 'No containers watched.' })); return; }
    var ul = el('ul', { class: 'probes' });
    list.forEach(function (c) {
      var level = LEVELS[c.level] ? c.level : 'pending';
      ul.append(el('li', { class: 'probe level-' + level }, el('div', { class: 'probe-head' }, levelBadge(level),
        el('span', { class: 'probe-name', text: String(c.name || '') }),
        el('span', { class: 'target', text: [c.state, c.health].filter(Boolean).join(' \u00b7 ') }))));
    });
    body.append(ul);
  }

  function probeRoute() {
    var m = location.hash.match(/^#\/probes\/(.+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function render() {
    if (!status) return;
    document.title = status.title;
    var title = $('title').firstChild;
    title.textContent = status.title;
    $('version').textContent = status.version;
    var banner = $('banner');
    banner.hidden = !status.message;
    banner.textContent = status.message || '';
    summaryLine(status.summary);
    var main = $('main');
    clear(main);
    var name = probeRoute();
    if (name !== null) { $('groups').hidden = true; renderDetail(main, name); } else renderList(main);
    renderContainers();
    document.body.setAttribute('data-generated', status.generated_at);
  }

  function getJSON(url) {
    return fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error(url + ': ' + r.status);
      return r.json();
    });
  }

  function refresh() {
    lastFetch = Date.now();
    var name = probeRoute();
    var jobs = [getJSON('api/v1/status')];
    if (name !== null) jobs.push(getJSON('api/v1/probes/' + encodeURIComponent(name)).catch(function () { return null; }));
    return Promise.all(jobs).then(function (res) {
      status = res[0];
      detail = res.length > 1 ? res[1] : null;
      render();
    }).catch(function () { setConn(false); });
  }

  // At most one fetch per half second, however many runs are announced.
  function schedule() {
    if (timer) return;
    var wait = Math.max(0, 500 - (Date.now() - lastFetch));
    timer = setTimeout(function () { timer = null; refresh(); }, wait);
  }

  function setConn(ok) {
    var c = $('conn');
    c.textContent = ok ? '\u25CF live' : '\u25CB reconnecting\u2026';
    c.className = ok ? 'conn' : 'conn offline';
  }

  function connect() {
    if (!window.EventSource) { setInterval(refresh, 5000); return; }
    var events = new EventSource('api/v1/events');
    // Also after a reconnect (vigil restarted): what happened meanwhile is fetched at once.
    events.addEventListener('open', function () { setConn(true); refresh(); });
    events.addEventListener('runs', schedule);
    events.addEventListener('resync', schedule);
    events.addEventListener('error', function () { setConn(false); });
  }

  window.addEventListener('hashchange', function () { detail = null; render(); refresh(); });
  // Relative times and the bar age; a safety net if events are blocked by a proxy.
  setInterval(refresh, 30000);
  refresh();
  connect();
})();
