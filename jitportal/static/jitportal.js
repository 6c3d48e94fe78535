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
  if (!zone || /(?:^|;\s*)tz=/.test(document.cookie)) return;
  document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax";
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
