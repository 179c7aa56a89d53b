// deployd status page: live updates over Server-Sent Events.
//
// The page is complete without this script. With it, the page subscribes to
// /api/v1/events and updates service cards, deployment rows, deliveries
// and releases in place. Data only ever reaches the DOM through textContent and
// attributes; new rows are clones of the server-rendered <template>s.
// The formatting below mirrors the template functions in server/page.go.
(function () {
  "use strict";

  var MAX_DEPLOYMENTS = 10;
  var MAX_DELIVERIES = 15;
  var MAX_RELEASES = 10;

  function shortDigest(d) {
    d = (d || "").replace(/^sha256:/, "");
    return d.length > 12 ? d.slice(0, 12) : d;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function formatTime(s) {
    if (!s) return "—";
    var t = new Date(s);
    if (isNaN(t.getTime()) || t.getUTCFullYear() <= 1) return "—";
    return t.getUTCFullYear() + "-" + pad(t.getUTCMonth() + 1) + "-" + pad(t.getUTCDate()) + " " +
      pad(t.getUTCHours()) + ":" + pad(t.getUTCMinutes()) + ":" + pad(t.getUTCSeconds()) + " UTC";
  }

  function isoTime(s) {
    if (!s) return "";
    var t = new Date(s);
    if (isNaN(t.getTime()) || t.getUTCFullYear() <= 1) return "";
    return t.toISOString().replace(/\.\d+Z$/, "Z");
  }

  function formatDuration(ms) {
    if (!(ms > 0)) return "0s";
    if (ms < 1000) return Math.floor(ms) + "ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
    var s = Math.floor(ms / 1000);
    if (ms < 3600000) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    return Math.floor(s / 3600) + "h" + pad(Math.floor(s / 60) % 60) + "m";
  }

  function deployedAt(d) { return d.finished_at || d.started_at || d.queued_at; }

  function took(d) {
    if (!d.started_at) return "";
    if (!d.finished_at) return "running";
    return formatDuration(new Date(d.finished_at) - new Date(d.started_at));
  }

  function triggerText(t) {
    t = t || {};
    if (t.kind === "webhook") {
      var s = "webhook";
      if (t.event) s += " " + t.event;
      var id = t.delivery_id || "";
      if (id.length > 12) s += " " + id.slice(0, 8) + "…";
      else if (id) s += " " + id;
      return s;
    }
    if ((t.kind === "manual" || t.kind === "rollback") && t.subject) return t.kind + " by " + t.subject;
    return t.kind || "";
  }

  function words(s) { return (s || "").replace(/_/g, " "); }

  function ref(tag, digest) {
    if (tag && digest) return tag + " @ " + shortDigest(digest);
    if (digest) return "@ " + shortDigest(digest);
    return tag || "—";
  }

  // DOM helpers. Selectors use only fixed names, never data.

  function field(root, name) { return root.querySelector('[data-field="' + name + '"]'); }
  function part(root, name) { return root.querySelector('[data-part="' + name + '"]'); }

  function setText(root, name, text) {
    var el = field(root, name);
    if (el) el.textContent = text;
    return el;
  }

  function setTime(root, name, iso) {
    var el = setText(root, name, formatTime(iso));
    if (el) el.setAttribute("datetime", isoTime(iso));
  }

  function setState(el, prefix, state) {
    if (!el) return;
    Array.prototype.slice.call(el.classList).forEach(function (c) {
      if (c.indexOf(prefix) === 0) el.classList.remove(c);
    });
    el.classList.add(prefix + state);
  }

  function byData(selector, attr, value) {
    var els = document.querySelectorAll(selector);
    for (var i = 0; i < els.length; i++) {
      if (els[i].getAttribute(attr) === value) return els[i];
    }
    return null;
  }

  function clone(id) {
    var tpl = document.getElementById(id);
    return tpl ? tpl.content.firstElementChild.cloneNode(true) : null;
  }

  // fillRows makes list hold one row per item, in order, cloning the
  // template tpl for rows it lacks.
  function fillRows(list, items, tpl, fill) {
    if (!list) return;
    for (var i = 0; i < items.length; i++) {
      var row = list.children[i];
      if (!row) {
        row = clone(tpl);
        if (!row) break;
        list.appendChild(row);
      }
      fill(row, items[i]);
    }
    while (list.children.length > items.length) list.removeChild(list.lastElementChild);
  }

  // rowByID returns the row of list whose attribute attr is id, or a new
  // clone of tpl placed newest first (before the first row with a smaller
  // id), the list then cut to max rows; added says it is new.
  function rowByID(list, attr, id, tpl, max) {
    for (var i = 0; i < list.children.length; i++) {
      if (list.children[i].getAttribute(attr) === String(id)) return { li: list.children[i], added: false };
    }
    var li = clone(tpl);
    if (!li) return null;
    var before = null;
    for (var j = 0; j < list.children.length; j++) {
      if (Number(list.children[j].getAttribute(attr)) < id) { before = list.children[j]; break; }
    }
    list.insertBefore(li, before);
    while (list.children.length > max) list.removeChild(list.lastElementChild);
    return { li: li, added: true };
  }

  function fillFailure(box, d) {
    if (!box) return;
    box.hidden = !d.error;
    setText(box, "error_class", d.error_class || "");
    setText(box, "error", d.error || "");
    setText(box, "hint", d.hint || "");
    var hint = part(box, "hint");
    if (hint) hint.hidden = !d.hint;
  }

  function fillStep(row, s) {
    setState(row, "outcome-", s.outcome || "");
    row.setAttribute("data-outcome", s.outcome || "");
    setText(row, "name", s.name || "");
    setText(row, "outcome", s.outcome || "");
    setText(row, "took", s.outcome ? formatDuration((s.duration_ns || 0) / 1e6) : "");
    setText(row, "message", s.message || "");
  }

  // fillVerification shows the verified badge with the signer workflow,
  // or "not verified" with what did not match, or neither.
  function fillVerification(li, v) {
    var ok = part(li, "verified");
    if (ok) {
      ok.hidden = !(v && v.verified);
      setText(ok, "signer", v && v.verified ? v.workflow || "" : "");
    }
    var no = part(li, "unverified");
    if (no) {
      no.hidden = !(v && !v.verified);
      no.setAttribute("title", (v && v.problem) || "");
    }
  }

  function fillDeployment(li, d) {
    li.setAttribute("data-deployment", String(d.id));
    li.id = "deployment-" + d.id; // the anchor notifications link to
    setText(li, "id", "#" + d.id);
    var badge = setText(li, "state", words(d.state));
    setState(badge, "state-", d.state);
    setText(li, "ref", ref(d.tag, d.digest));
    setTime(li, "when", deployedAt(d));
    var trig = setText(li, "trigger", triggerText(d.trigger));
    if (trig) trig.setAttribute("title", (d.trigger && d.trigger.delivery_id) || "");
    setText(li, "took", took(d));
    fillFailure(part(li, "failure"), d);
    fillVerification(li, d.verification);

    var steps = d.steps || [];
    fillRows(li.querySelector('[data-list="steps"]'), steps, "tpl-step", fillStep);
    var none = part(li, "no_steps");
    if (none) none.hidden = steps.length > 0;
  }

  function card(service) { return byData(".card", "data-service", service); }

  function onDeployment(d) {
    var c = card(d.service);
    if (!c) return;
    var list = c.querySelector('[data-list="deployments"]');
    if (!list) return;
    var row = rowByID(list, "data-deployment", d.id, "tpl-deployment", MAX_DEPLOYMENTS);
    if (!row) return;
    var li = row.li;
    if (row.added) {
      var none = part(c, "no_deployments");
      if (none) none.hidden = true;
      var history = c.querySelector("details.history");
      if (history) history.open = true;
    }
    fillDeployment(li, d);
    if (d.error && li === list.firstElementChild) {
      var det = li.querySelector("details");
      if (det) det.open = true;
    }
  }

  function onService(v) {
    var c = card(v.name);
    if (!c) return;
    var st = v.status || {};
    var last = v.last_deployment;
    var state = last ? last.state : "none";
    var badge = setText(c, "state", words(state));
    setState(badge, "state-", state);
    var degraded = part(c, "degraded");
    if (degraded) degraded.hidden = !st.degraded;
    setText(c, "tag", st.tag || "—");
    var cred = part(c, "credential");
    if (cred) cred.hidden = !st.credential;
    setText(c, "credential", st.credential || "");
    setText(c, "credential_note", st.credential_note ? "after passing over " + st.credential_note : "");
    var dg = setText(c, "digest", st.digest ? shortDigest(st.digest) : "");
    if (dg) dg.setAttribute("title", st.digest || "");
    if (last) {
      setTime(c, "last_when", deployedAt(last));
      var trig = setText(c, "last_trigger", triggerText(last.trigger));
      if (trig) trig.setAttribute("title", (last.trigger && last.trigger.delivery_id) || "");
      setText(c, "last_took", took(last));
      // The card's own failure box is the first one, outside the history.
      fillFailure(c.querySelector(':scope > [data-part="failure"]'), last);
    }
  }

  function onDelivery(d) {
    var list = document.querySelector('[data-list="deliveries"]');
    if (!list) return;
    var li = clone("tpl-delivery");
    if (!li) return;
    setState(li, "result-", d.result || "");
    li.setAttribute("data-delivery", d.delivery_id || "");
    setText(li, "result", d.result || "");
    setText(li, "event", (d.event || "") + (d.action ? " · " + d.action : ""));
    setTime(li, "when", d.received_at);
    setText(li, "id", d.delivery_id || "");
    var reason = d.reason || "";
    if (!reason && d.deployment_ids && d.deployment_ids.length) {
      reason = "deployments " + d.deployment_ids.map(function (id) { return "#" + id; }).join(", ");
    }
    setText(li, "reason", reason);
    list.insertBefore(li, list.firstElementChild);
    while (list.children.length > MAX_DELIVERIES) list.removeChild(list.lastElementChild);
    var none = part(document, "no_deliveries");
    if (none) none.hidden = true;
  }

  function shortCommit(c) { c = c || ""; return c.length > 7 ? c.slice(0, 7) : c; }

  function fillMember(li, m) {
    li.setAttribute("data-member", m.service || "");
    setText(li, "service", m.service || "");
    setText(li, "ref", ref(m.tag, m.digest));
    var st = setText(li, "member_state", m.state ? words(m.state) : "not started");
    setState(st, "state-", m.state || "queued");
    var rb = setText(li, "rollback", "rolled back: " + words(m.rollback_state));
    if (rb) {
      rb.hidden = !m.rollback_id;
      rb.setAttribute("title", m.rollback_id ? "deployment #" + m.rollback_id : "");
      setState(rb, "state-", m.rollback_state || "");
    }
  }

  function fillRelease(li, r) {
    li.setAttribute("data-release", String(r.id));
    setText(li, "id", "#" + r.id);
    var badge = setText(li, "state", words(r.state));
    setState(badge, "state-", r.state || "");
    setText(li, "set", r.set || "");
    var c = setText(li, "commit", shortCommit(r.commit));
    if (c) c.setAttribute("title", r.commit || "");
    setTime(li, "created", r.created_at);
    var failed = part(li, "failed");
    if (failed) failed.hidden = !r.failed_member;
    setText(li, "failed_member", r.failed_member || "");
    var reason = setText(li, "reason", r.reason || "");
    if (reason) reason.hidden = !r.reason;

    fillRows(li.querySelector('[data-list="members"]'), r.members || [], "tpl-release-member", fillMember);
  }

  function onRelease(r) {
    var list = document.querySelector('[data-list="releases"]');
    if (!list) return;
    var row = rowByID(list, "data-release", r.id, "tpl-release", MAX_RELEASES);
    if (!row) return;
    if (row.added) {
      var none = part(document, "no_releases");
      if (none) none.hidden = true;
    }
    fillRelease(row.li, r);
  }

  function setLive(state, text) {
    var live = document.getElementById("live");
    var label = document.getElementById("live-text");
    if (live) live.setAttribute("data-state", state);
    if (label) label.textContent = text;
  }

  function handler(fn) {
    return function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      fn(data);
    };
  }

  function start() {
    if (!window.EventSource) return;
    var es = new EventSource("/api/v1/events");
    setLive("connecting", "Connecting…");
    es.addEventListener("open", function () { setLive("live", "Live"); });
    es.addEventListener("error", function () {
      setLive("connecting", es.readyState === EventSource.CLOSED ? "Disconnected · reload to retry" : "Reconnecting…");
    });
    es.addEventListener("deployment", handler(onDeployment));
    es.addEventListener("service", handler(onService));
    es.addEventListener("delivery", handler(onDelivery));
    es.addEventListener("release", handler(onRelease));
    window.addEventListener("pagehide", function () { es.close(); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
