// pgfront stats page: polls api/v1/overview every second and updates the tables in place.
// Text is only ever set with textContent: nothing from the API is parsed as HTML.
"use strict";
(() => {
  const TOKEN_KEY = "pgfront.token";
  const STATES = ["ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "LAST_ACK", "CLOSING"];
  const HOT = new Set(["CLOSE_WAIT", "FIN_WAIT2"]); // the states of stuck half-closed sessions
  const $ = (id) => document.getElementById(id);

  // A ?token= in the address moves to sessionStorage and out of the address bar (and history).
  function takeToken() {
    const url = new URL(location.href);
    const t = url.searchParams.get("token");
    if (t !== null) {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      url.searchParams.delete("token");
      history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    }
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }
  const token = takeToken();

  const p2 = (n) => String(n).padStart(2, "0");
  // dur formats seconds: 850ms, 12s, 5m03s, 2h05m, 3d04h.
  function dur(s) {
    if (!(s >= 0)) return "–";
    if (s < 1) return Math.round(s * 1000) + "ms";
    s = Math.floor(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + p2(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + p2(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + p2(Math.floor((s % 86400) / 3600)) + "h";
  }
  function size(n) {
    if (!(n >= 0)) return "?";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + u[i];
  }
  // ms parses an RFC 3339 time; NaN for Go's zero time ("never").
  function ms(t) {
    const v = Date.parse(t);
    return v > 0 ? v : NaN;
  }
  const ago = (now, t) => dur((now - ms(t)) / 1000);
  const limit = (n, max) => n + "/" + (max > 0 ? max : "∞");

  // syncRows makes tbody hold one row per item, in order, keyed by the attribute attr: rows
  // are reused and only changed cells are written. cells(item) gives each cell as text or as
  // {t: text, c: class, title, a: {attribute: value}}.
  function syncRows(tbody, items, attr, key, cells) {
    const old = new Map();
    for (const tr of Array.from(tbody.rows)) {
      const k = tr.getAttribute(attr);
      if (k === null) tr.remove(); else old.set(k, tr);
    }
    let prev = null;
    for (const it of items) {
      const k = String(key(it));
      let tr = old.get(k);
      if (tr) old.delete(k); else { tr = document.createElement("tr"); tr.setAttribute(attr, k); }
      const vals = cells(it);
      while (tr.cells.length > vals.length) tr.deleteCell(-1);
      vals.forEach((v, i) => {
        const td = tr.cells[i] || tr.insertCell(-1);
        const o = v !== null && typeof v === "object" ? v : { t: v };
        const text = o.t === undefined || o.t === null ? "" : String(o.t);
        if (td.textContent !== text) td.textContent = text;
        const cls = o.c || "";
        if (td.className !== cls) td.className = cls;
        if ((o.title || "") !== td.title) td.title = o.title || "";
        for (const [name, value] of Object.entries(o.a || {})) td.setAttribute(name, value);
      });
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
    if (!items.length) {
      const tr = tbody.insertRow();
      tr.className = "none";
      const td = tr.insertCell();
      td.colSpan = tbody.parentNode.tHead.rows[0].cells.length;
      td.textContent = "none";
    }
  }

  // syncList does the same for the li children of ul: render(li, item) fills one item.
  function syncList(ul, items, attr, key, render, emptyText) {
    const old = new Map();
    for (const li of Array.from(ul.children)) {
      const k = li.getAttribute(attr);
      if (k === null) li.remove(); else old.set(k, li);
    }
    let prev = null;
    for (const it of items) {
      const k = String(key(it));
      let li = old.get(k);
      if (li) old.delete(k); else { li = document.createElement("li"); li.setAttribute(attr, k); }
      render(li, it);
      const want = prev ? prev.nextSibling : ul.firstChild;
      if (want !== li) ul.insertBefore(li, want);
      prev = li;
    }
    for (const li of old.values()) li.remove();
    if (!items.length && emptyText) {
      const li = document.createElement("li");
      li.className = "ok";
      li.textContent = emptyText;
      ul.append(li);
    }
  }
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function render(o) {
    const now = ms(o.now);
    setText($("sessions"), limit(o.sessions_open, o.maxconn));
    setText($("queued"), String(o.queued));
    setText($("uptime"), ago(now, o.started));
    setText($("updated"), new Date(now).toLocaleTimeString());

    syncList($("alerts"), (o.alerts || []).filter((a) => a.active), "data-alert", (a) => a.name, (li, a) => {
      const since = ms(a.since) ? ", active for " + ago(now, a.since) : "";
      setText(li, `${a.name}: ${a.message} (value ${a.value}, threshold ${a.threshold}${since})`);
    }, "no active alerts");

    syncList($("dcs"), o.dcs || [], "data-dcs", (d) => d.cluster, (li, d) => {
      const state = d.up ? `watching, leader ${d.leader || "none (election)"}` : `NOT CURRENT: node checks decide (${d.last_error || "no answer"})`;
      setText(li, `${d.cluster} ${d.prefix}: ${state}, since ${ago(now, d.since)}; members ${(d.members || []).join(", ") || "none"}; ${d.leader_changes} leader changes`);
      li.className = d.up ? "" : "warn";
    }, "no dcs role source configured");

    const fl = o.fleet || {};
    setText($("fleet"), fl.secret
      ? `this instance: ${fl.name} (key tag ${fl.tag}); peer requests dropped ${fl.dropped_out} sent / ${fl.dropped_in} received, ${fl.refused} refused`
      : `no fleet secret: this instance (${fl.name || "?"}) forwards no cancels to peers; unknown keys take the fallback`);
    syncList($("peers"), fl.peers || [], "data-peer", (p) => p.addr, (li, p) => {
      setText(li, `${p.name || "(no name)"} at ${p.addr}${p.source ? ` (${p.source})` : ""}, tag ${p.tag < 0 ? "not known yet" : p.tag}`);
    }, "no peers");

    syncRows($("routes"), o.routes || [], "data-route", (r) => r.name, (r) => [
      r.name, r.listen, r.cluster, r.role,
      { t: limit(r.sessions, r.maxconn), c: "n" },
      { t: r.queued, c: r.queued > 0 ? "n warn" : "n" },
      { t: r.total, c: "n" },
    ]);

    syncRows($("servers"), o.servers || [], "data-server", (s) => s.cluster + "/" + s.name, (s) => {
      const checked = ms(s.last_check);
      return [
        s.cluster + "/" + s.name, s.address, s.role,
        { t: s.up ? "up" : "down", c: s.up ? "up" : "down" },
        { t: s.admin, c: s.admin === "ready" ? "" : "warn" },
        { t: s.split_brain ? "split brain" : s.fenced ? "fenced" : "", c: s.split_brain || s.fenced ? "warn" : "" },
        { t: s.leader === "unknown" ? "" : s.leader.replace("_", " "), c: s.leader === "leader" ? "up" : "" },
        { t: s.lag_bytes < 0 ? "?" : size(s.lag_bytes), c: "n" },
        { t: s.lag_seconds < 0 ? "?" : s.lag_seconds.toFixed(1), c: "n" },
        { t: limit(s.sessions, s.maxconn), c: "n" },
        { t: checked ? ago(now, s.last_check) : "never", c: "n" },
        { t: checked ? s.check_ms.toFixed(1) : "", c: "n" },
        { t: s.last_error || "", c: s.last_error ? "err" : "", title: s.last_error || "" },
      ];
    });

    renderSockets(o.sockets || {}, now);

    const live = o.live_sessions || [];
    setText($("livecount"), `(${live.length} shown, ${o.sessions_open} open)`);
    syncRows($("live"), live, "data-session-id", (s) => s.id, (s) => [
      { t: s.id, c: "n" }, s.route, s.client, s.server || "–", s.user, s.database,
      { t: s.state + (s.parked ? " (parked)" : ""), c: s.state === "half_closed" ? "hot" : s.state.startsWith("idle_in_") ? "warn" : "" },
      s.tx_status,
      s.tls || "",
      { t: dur(s.age_s), c: "n" },
      { t: s.idle_s > 0 ? dur(s.idle_s) : "", c: "n" },
      { t: size(s.bytes_from_client), c: "n" },
      { t: size(s.bytes_from_server), c: "n" },
    ]);

    const causes = Object.entries(o.ended_by_cause || {}).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    syncList($("causes"), causes, "data-cause", (c) => c[0], (li, c) => {
      if (!li.firstChild) li.append(document.createElement("span"), " ", document.createElement("b"));
      setText(li.firstChild, c[0]);
      setText(li.lastChild, String(c[1]));
    });
    syncRows($("recent"), o.recent || [], "data-ended-id", (e) => e.id, (e) => [
      { t: e.id, c: "n" }, e.route, e.client, e.server || "–", e.user, e.database,
      { t: e.cause, c: "cause" },
      { t: ago(now, e.ended), c: "n" },
      { t: dur(e.duration_s), c: "n" },
    ]);
  }

  // renderSockets pivots the (route, side, server, state) counts into one row per
  // (route, side, server) with a column per state.
  function renderSockets(k, now) {
    const rows = new Map();
    for (const c of k.counts || []) {
      const server = c.side === "server" ? c.cluster + "/" + c.server : "";
      const key = [c.route, c.side, server].join("|");
      let r = rows.get(key);
      if (!r) rows.set(key, (r = { key, route: c.route, side: c.side, server, n: {}, other: 0 }));
      if (STATES.includes(c.state)) r.n[c.state] = (r.n[c.state] || 0) + c.count;
      else r.other += c.count;
    }
    const sorted = Array.from(rows.values()).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    syncRows($("sockets"), sorted, "data-sock", (r) => r.key, (r) => [
      r.route, r.side, r.server || "–",
      ...STATES.map((st) => {
        const n = r.n[st] || 0;
        return { t: n, c: "n" + (n === 0 ? " zero" : HOT.has(st) ? " hot" : ""), a: { "data-state": st } };
      }),
      { t: r.other, c: r.other ? "n" : "n zero", a: { "data-state": "other" } },
    ]);

    const info = $("sockinfo");
    const parts = [`half-closed sessions: ${k.half_closed || 0}`];
    if (k.half_closed > 0) parts.push(`oldest ${dur(k.oldest_half_closed_s)}`);
    parts.push(ms(k.sampled_at)
      ? `sampled ${ago(now, k.sampled_at)} ago via ${k.source} in ${(k.sample_ms || 0).toFixed(1)} ms`
      : "no sample yet");
    const text = parts.join(" · ");
    if (info.firstChild === null || info.firstChild.textContent !== text) {
      info.replaceChildren(text);
      if (k.error) {
        const err = document.createElement("span");
        err.className = "err";
        err.textContent = " · error: " + k.error;
        info.append(err);
      }
    }
  }

  function banner(msg) {
    const b = $("banner");
    setText(b, msg);
    b.hidden = !msg;
    document.body.classList.toggle("stale", !!msg);
  }

  // fetchOverview returns the overview or throws an Error whose message is for the banner.
  async function fetchOverview(signal) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    let res;
    try {
      res = await fetch("api/v1/overview", { headers, cache: "no-store", signal });
    } catch (e) {
      throw new Error(e.name === "AbortError" ? "pgfront did not answer within 5s" : "cannot reach pgfront: " + e.message);
    }
    if (res.status === 401) {
      throw new Error(token
        ? "token required: the token was refused; open this page with ?token=… again"
        : "token required: open this page with ?token=YOUR_TOKEN");
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try { msg += ": " + (await res.json()).error; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res.json();
  }

  async function tick() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    try {
      render(await fetchOverview(abort.signal));
      banner("");
    } catch (e) {
      banner(e.message || String(e));
    } finally {
      clearTimeout(timer);
      setTimeout(tick, 1000);
    }
  }
  tick();
})();
