// Progressive enhancement only: every screen works without it.
"use strict";
(function () {
  function data(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  // Lockout countdown: the button is disabled until the pump allows the next demand bolus.
  document.querySelectorAll("[data-countdown]").forEach(function (el) {
    var end = Date.now() + 1000 * parseInt(el.getAttribute("data-countdown"), 10);
    var button = document.getElementById(el.getAttribute("data-enables"));
    function tick() {
      var left = Math.max(0, Math.round((end - Date.now()) / 1000));
      el.textContent = Math.floor(left / 60) + " min " + (left % 60) + " s";
      if (button) { button.disabled = left > 0; }
      if (left > 0) { setTimeout(tick, 1000); } else if (button) { el.parentNode.textContent = "Allowed now."; }
    }
    tick();
  });
  if (typeof Chart === "undefined") { return; }
  Chart.defaults.font.size = 15;
  Chart.defaults.animation = false;
  var profile = data("profile-data");
  if (profile) {
    var sets = [];
    if (profile.current.length) {
      sets.push({ label: "current", data: profile.current.map(function (p) { return { x: p[0], y: p[1] }; }),
                  stepped: "before", borderColor: "#8c959f", borderDash: [6, 4], pointRadius: 0 });
    }
    sets.push({ label: "new", data: profile["new"].map(function (p) { return { x: p[0], y: p[1] }; }),
                stepped: "before", borderColor: "#0b5cad", borderWidth: 3, pointRadius: 3 });
    new Chart(document.getElementById("profile-chart"), {
      type: "line", data: { datasets: sets },
      options: { maintainAspectRatio: false, parsing: false,
        scales: { x: { type: "linear", min: 0, max: 24, ticks: { stepSize: 2, callback: function (v) { return v + ":00"; } },
                       title: { display: true, text: "time of day" } },
                  y: { beginAtZero: true, title: { display: true, text: profile.unit } } } }
    });
  }
  var diary = data("diary-data");
  if (diary) {
    new Chart(document.getElementById("diary-chart"), {
      type: "line",
      data: { labels: diary.points.map(function (p) { return p[0]; }),
              datasets: [{ label: "pain (0-10)", data: diary.points.map(function (p) { return p[1]; }),
                           borderColor: "#b42318", pointRadius: 4 }] },
      options: { maintainAspectRatio: false, scales: { y: { min: 0, max: 10, title: { display: true, text: "pain" } } } }
    });
  }
})();
