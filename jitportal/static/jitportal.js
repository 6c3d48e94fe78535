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
