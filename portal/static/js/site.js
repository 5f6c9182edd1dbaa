// Site-wide behaviour: theme toggle, language auto-submit, mobile menu.
(function () {
  "use strict";
  var root = document.documentElement;
  var order = ["auto", "dark", "light"];
  document.querySelectorAll("[data-theme-toggle]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var next = order[(order.indexOf(root.dataset.theme || "auto") + 1) % order.length];
      root.dataset.theme = next;
      localStorage.setItem("virtlab-theme", next);
      btn.title = "Theme: " + next;
    });
  });
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });
  document.querySelectorAll("[data-nav-toggle]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var menu = document.getElementById(btn.getAttribute("aria-controls"));
      var open = menu.classList.toggle("open");
      btn.setAttribute("aria-expanded", String(open));
    });
  });
  var section = location.pathname.split("/")[1];
  document.querySelectorAll("[data-nav]").forEach(function (a) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
  });
})();
