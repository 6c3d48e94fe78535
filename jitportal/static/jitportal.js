// Top bar menus (<details>): one open at a time, closed by a click elsewhere or Escape.
(function () {
  var menus = document.querySelectorAll("header.top details.menu");
  function close(except) { menus.forEach(function (m) { if (m !== except) m.open = false; }); }
  menus.forEach(function (m) { m.addEventListener("toggle", function () { if (m.open) close(m); }); });
  document.addEventListener("click", function (e) { if (!e.target.closest("details.menu")) close(null); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") close(null); });
})();

// Live countdown on My access; the page reads fine without it.
(function () {
  function fmt(ms) {
    if (ms <= 0) return "expired";
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + " h " : "") + m + " min " + (s % 60) + " s";
  }
  function tick() {
    document.querySelectorAll(".countdown[data-expires]").forEach(function (el) {
      el.textContent = fmt(new Date(el.dataset.expires) - new Date());
    });
  }
  if (document.querySelector(".countdown")) { tick(); setInterval(tick, 1000); }
})();

// The person's time zone: on a first visit, the browser's zone becomes the
// tz cookie that the server reads (accounts/timezones.py); a zone picked on
// the request form replaces it. Without the script the portal's zone applies.
(function () {
  var zone;
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
  // IANA names need no escaping (the server reads the cookie as it is).
  if (!/^[A-Za-z0-9_+\/-]+$/.test(zone || "") || /(?:^|;\s*)tz=/.test(document.cookie)) return;
  document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
  var select = document.getElementById("id_time_zone");
  if (select && !select.closest("form").querySelector(".has-error")) {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === zone) { select.value = zone; break; }
    }
  }
})();

// Request form: choosing a profile fills its default duration (unless the
// person typed one) and shows only the fields its target kind takes.
(function () {
  var data = document.getElementById("profile-hints");
  var profile = document.getElementById("id_profile");
  var duration = document.getElementById("id_duration");
  if (!data || !profile || !duration) return;
  var hints = JSON.parse(data.textContent);
  var filled = duration.value;  // the value the server or this script put there
  var others = document.querySelectorAll('input[name="also"]');
  function kindsChosen() {
    var kinds = {};
    [profile.value].concat(Array.prototype.filter.call(others, function (b) { return b.checked; }).map(function (b) { return b.value; }))
      .forEach(function (id) { if (hints[id]) kinds[hints[id].kind] = true; });
    return kinds;
  }
  function update(fill) {
    var hint = hints[profile.value];
    if (fill && hint && (duration.value === "" || duration.value === filled)) duration.value = filled = hint.duration;
    var kinds = kindsChosen();
    document.querySelectorAll("[data-kinds]").forEach(function (control) {
      var wanted = control.dataset.kinds.split(" ").some(function (k) { return kinds[k]; });
      var wrap = control.closest(".field");
      // Something typed or refused stays in sight.
      wrap.hidden = !wanted && !control.value && !wrap.classList.contains("has-error");
    });
  }
  profile.addEventListener("change", function () { update(true); });
  others.forEach(function (b) { b.addEventListener("change", function () { update(false); }); });
  update(!duration.value);
})();

// Request page: follow the request (pending -> approved -> ready) without a
// reload, by polling its status (grants:request_status); when the access is
// ready, offer Show credentials. Without the script a reload shows the same.
(function () {
  var facts = document.querySelector("[data-live]");
  if (!facts || !window.fetch) return;
  var settled = ["denied", "cancelled", "lapsed"], grantSettled = ["revoking", "revoked", "failed"];
  var credentials = document.querySelector("[data-live-credentials]");
  // Polls while something may still change: a decision, then the grant being set up.
  function waiting(req, grant) {
    if (settled.indexOf(req) >= 0) return false;
    if (req === "pending" || !grant) return true;
    return grant !== "active" && grantSettled.indexOf(grant) < 0;
  }
  function show(p) {
    var badge = facts.querySelector("[data-live-request]");
    badge.textContent = p.status_display;
    badge.className = "badge status-" + p.status;
    if (p.status !== "pending") {
      document.querySelectorAll("[data-live-pending-only]").forEach(function (el) { el.hidden = true; });
    }
    if (p.grant) {
      facts.querySelectorAll("[data-live-grant-row]").forEach(function (el) { el.hidden = false; });
      var link = facts.querySelector("[data-live-grant-link]");
      link.href = p.grant.url;
      link.textContent = "Grant #" + p.grant.id;
      facts.querySelector("[data-live-grant]").textContent = p.grant.status_display;
    }
    if (credentials && p.credentials_url) {
      credentials.action = p.credentials_url;
      credentials.hidden = false;
    }
    facts.dataset.liveStatus = p.status;
    facts.dataset.liveGrantStatus = p.grant ? p.grant.status : "";
  }
  var delay = 2000;
  function poll() {
    if (!waiting(facts.dataset.liveStatus, facts.dataset.liveGrantStatus)) return;
    if (document.hidden) { setTimeout(poll, delay); return; }
    fetch(facts.dataset.live, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (p) { show(p); delay = 2000; setTimeout(poll, delay); })
      .catch(function () { delay = Math.min(delay * 2, 60000); setTimeout(poll, delay); });
  }
  setTimeout(poll, delay);
})();
