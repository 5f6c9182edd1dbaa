// Knowledge base: copy buttons (copy the precomputed command text), mobile TOC, live search fallback.
(function () {
  "use strict";
  var content = document.querySelector(".kb-content");
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "absolute"; ta.style.left = "-9999px";
    document.body.appendChild(ta); ta.select();
    try { document.execCommand("copy"); } finally { document.body.removeChild(ta); }
    return Promise.resolve();
  }
  if (content) {
    var label = content.dataset.copyLabel || "Copy", done = content.dataset.copiedLabel || "Copied";
    content.querySelectorAll(".codeblock[data-copy]").forEach(function (block) {
      if (!block.dataset.copy || block.dataset.lang === "text") return;
      var btn = document.createElement("button");
      btn.type = "button"; btn.className = "kb-copy"; btn.textContent = label;
      btn.addEventListener("click", function () {
        copyText(block.dataset.copy).then(function () {
          btn.textContent = done; btn.classList.add("done");
          setTimeout(function () { btn.textContent = label; btn.classList.remove("done"); }, 1500);
        });
      });
      block.appendChild(btn);
    });
  }
  var toc = document.querySelector(".kb-toc");
  if (toc && window.matchMedia("(max-width: 900px)").matches) toc.removeAttribute("open");
  // Print everything: collapsed parts open before printing.
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.setAttribute("open", ""); });
  });
  // Without htmx (blocked or not loaded), search-as-you-type still works with fetch.
  var input = document.querySelector("[data-kb-live]");
  if (input && !window.htmx) {
    var timer = null;
    var run = function () {
      var form = input.form, params = new URLSearchParams(new FormData(form));
      params.set("partial", "1");
      fetch(form.action + "?" + params.toString(), { headers: { "HX-Request": "true" } })
        .then(function (r) { return r.text(); })
        .then(function (html) { document.getElementById("kb-results").innerHTML = html; });
    };
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(run, 150); });
  }
})();
