// Apply the saved theme before first paint to avoid a flash. Loaded synchronously in <head>, as a
// file rather than inline: the Content-Security-Policy allows no inline script.
(function () {
  var theme = localStorage.getItem("virtlab-theme");
  if (theme) document.documentElement.dataset.theme = theme;
})();
