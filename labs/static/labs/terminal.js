/* The lab terminal: xterm.js on a websocket to the VM's serial console.
   Binary frames carry UTF-8 bytes both ways; text frames are JSON control messages.
   Reconnects with backoff; the server resends its scrollback, so the screen is rebuilt.
   The server's limits arrive as {type: "notice" | "error", code, message} (shown by hooks.notice),
   "resync" (this page fell behind the output: reconnect now for the scrollback) or a close code. */
(function () {
  "use strict";

  var GONE = 4410, FORBIDDEN = 4403, SIGNED_OUT = 4401, RESYNC = 4408, TOO_MANY = 4429, TOO_BIG = 1009;

  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function open(el, url, hooks) {
    var term = new window.Terminal({
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: cssVar("--mono", "monospace"),
      fontSize: 14,
      theme: { background: "#0d1117", foreground: "#e6edf3", cursor: cssVar("--accent", "#7aa2ff") }
    });
    var fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    var encoder = new TextEncoder();
    var ws = null, attempts = 0, closedForGood = false, timer = null, lastResync = 0;

    function status(text) { if (hooks.status) hooks.status(text); }
    function notice(code, message) { if (hooks.notice) hooks.notice(code, message); }

    // A paste over the server's frame size is refused here, with the same notice: sent, uvicorn
    // would close the socket mid-frame (1009), which a busy browser may only see as a reset.
    var maxFrame = parseInt(el.dataset.maxFrame || "0", 10);
    function sendBytes(bytes) {
      if (maxFrame && bytes.length > maxFrame) { notice("frame_size", ""); return; }
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes);
    }

    function connect() {
      ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      ws.onopen = function () { attempts = 0; status("connected"); sendResize(); };
      ws.onmessage = function (ev) {
        if (typeof ev.data !== "string") {
          term.write(new Uint8Array(ev.data)); // xterm decodes UTF-8 across chunk boundaries
          return;
        }
        var msg = JSON.parse(ev.data);
        if (msg.type === "hello") {
          term.reset(); // the scrollback that follows redraws everything
          if (msg.observer) status("observer");
        } else if (msg.type === "gone") {
          closedForGood = true;
          term.write("\r\n\x1b[1;31m" + (hooks.goneText || "VM gone") + "\x1b[0m " + (msg.reason || "") + "\r\n");
          if (hooks.gone) hooks.gone(msg.reason);
        } else if (msg.type === "notice" || msg.type === "error") {
          notice(msg.code, msg.message);
        }
      };
      ws.onclose = function (ev) {
        if (ev.code === GONE || ev.code === FORBIDDEN || ev.code === SIGNED_OUT) closedForGood = true;
        if (closedForGood) {
          status({ 4403: "forbidden", 4401: "ws_signed_out" }[ev.code] || "gone");
          return;
        }
        var delay = Math.min(15000, 500 * Math.pow(2, attempts++));
        if (ev.code === RESYNC && Date.now() - lastResync > 5000) {
          delay = 0; // behind the output: the scrollback brings the screen back at once (but not in a loop)
          lastResync = Date.now();
          attempts = 0;
        } else if (ev.code === TOO_MANY) {
          delay = Math.max(delay, 5000); // until another tab closes
        } else if (ev.code === TOO_BIG) {
          notice("frame_size", ""); // the server refused a paste over its frame size
        }
        status(ev.code === RESYNC ? "resync" : ev.code === TOO_MANY ? "ws_too_many_sockets" : "reconnecting");
        timer = setTimeout(connect, delay + Math.random() * 250);
      };
    }

    function sendResize() {
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
      }
    }

    // Typing, pastes and IME compositions (e.g. Chinese) all arrive here as strings.
    term.onData(function (data) { sendBytes(encoder.encode(data)); });
    term.onBinary(function (data) {
      var bytes = new Uint8Array(data.length);
      for (var i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 255;
      sendBytes(bytes);
    });
    // The guest's tty follows the terminal's size (the relay sets it with stty), so line editing
    // and full-screen programs wrap where the page does. Fit on any layout change of the element.
    term.onResize(sendResize);
    var onResize = function () { fit.fit(); };
    var observer = window.ResizeObserver ? new ResizeObserver(onResize) : null;
    if (observer) observer.observe(el);
    window.addEventListener("resize", onResize);
    connect();

    return {
      term: term,
      focus: function () { term.focus(); },
      close: function () {
        closedForGood = true;
        clearTimeout(timer);
        window.removeEventListener("resize", onResize);
        if (observer) observer.disconnect();
        if (ws) ws.close();
      },
      dispose: function () { this.close(); term.dispose(); }
    };
  }

  window.VirtlabTerminal = { open: open };
})();
