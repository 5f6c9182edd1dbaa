// xterm.js's DOM renderer styles the terminal with <style> elements it creates, and colours
// true-colour text with style attributes; this page's Content-Security-Policy allows neither
// inline (no 'unsafe-inline'). Loaded before xterm.js with the page's nonce, this gives every
// <style> created by script the nonce, and turns a script's setAttribute("style", …) into the
// equivalent CSSOM assignment, which the policy does not govern. Markup injected into the page
// still gets no style at all: that, and any inline script, is what the policy keeps out.
(function () {
  "use strict";
  var nonce = document.currentScript && document.currentScript.nonce;
  if (!nonce) return;
  var createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (tagName, options) {
    var element = createElement.call(this, tagName, options);
    if (String(tagName).toLowerCase() === "style") element.setAttribute("nonce", nonce);
    return element;
  };
  var setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (String(name).toLowerCase() === "style" && this.style) {
      this.style.cssText = String(value);
      return;
    }
    setAttribute.call(this, name, value);
  };
})();
