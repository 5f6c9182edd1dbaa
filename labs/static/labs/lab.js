/* The lab page: session state from the DB (embedded JSON), then live over the events websocket;
   actions go to the JSON API. The terminal lives in terminal.js. */
(function () {
  "use strict";

  var root = document.getElementById("lab");
  if (!root) return;
  var strings = JSON.parse(document.getElementById("lab-strings").textContent);
  var session = JSON.parse(document.getElementById("lab-session").textContent);
  var lang = (document.documentElement.lang || "en").indexOf("zh") === 0 ? "zh" : "en";
  var wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  var ENDED = ["completed", "expired", "failed", "destroyed"];
  var events = null, eventsAttempts = 0, terminal = null, countdownTimer = null, checking = {};
  var terminalStatus = "", noticeTimer = null;

  function $(sel) { return root.querySelector(sel); }
  function $all(sel) { return Array.prototype.slice.call(root.querySelectorAll(sel)); }
  function show(el, on) { if (el) el.hidden = !on; }
  function isLive(s) { return s && ENDED.indexOf(s.state) < 0; }

  function csrfToken() {
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function api(method, path, body) {
    return fetch(root.dataset.api + path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { showError(data.detail || strings.error); if (data.session) loadSession(data.session); throw data; }
        return data;
      });
    });
  }

  function showError(text) {
    var el = $("[data-error]");
    el.textContent = text || "";
    show(el, !!text);
  }

  function loadSession(id) {
    api("GET", "sessions/" + id).then(update);
  }

  function render() {
    var s = session, live = isLive(s), ready = s && s.state === "ready";
    $("[data-state-badge]").textContent = s ? s.state_label : "";
    $("[data-state-badge]").dataset.state = s ? s.state : "";
    show($('[data-action="start"]'), !live);
    show($('[data-action="extend"]'), ready);
    show($('[data-action="reset"]'), ready);
    show($('[data-action="stop"]'), live);
    var progress = $("[data-progress]");
    if (s && s.state === "queued") progress.textContent = strings.queued + ": " + s.queue_position;
    else if (s && (s.state === "completed" || (s.state === "destroyed" && allPassed(s)))) progress.textContent = strings.completed;
    else if (!s || s.state !== "provisioning") progress.textContent = "";
    if (s && s.error) showError(s.error); else if (live) showError("");
    $all(".lab-step").forEach(function (li) {
      var n = parseInt(li.dataset.step, 10);
      var result = s && s.results ? s.results[String(n)] : null;
      li.classList.toggle("is-current", !!(live && s.current_step === n));
      li.classList.toggle("is-done", !!(result && result.passed));
      show(li.querySelector('[data-action="check"]'), ready && s.current_step === n);
      // Any step reached so far can be taken back to its checkpoint: earlier ones, or the current one afresh.
      var gotoButton = li.querySelector('[data-action="goto"]');
      show(gotoButton, ready && s.checkpoints.indexOf(n) >= 0 && n <= s.current_step);
      if (ready) gotoButton.textContent = n === s.current_step ? strings.restart_step : strings.back_to_step;
      var verdict = li.querySelector("[data-verdict]");
      if (checking[n]) return;
      verdict.className = "step-verdict";
      verdict.textContent = "";
      if (result) {
        verdict.classList.add(result.passed ? "is-pass" : "is-fail");
        var text = function (d) { return d[lang] || d.en; };
        var reasons = (result.details || []).filter(function (d) { return !d.ok && !d.note; }).map(text);
        var notes = (result.details || []).filter(function (d) { return d.note; }).map(text);  // e.g. no checkpoint taken
        verdict.textContent = result.passed ? "✓ " + strings.passed + (notes.length ? ": " + notes.join(" · ") : "")
          : "✗ " + strings.failed + (reasons.length ? ": " + reasons.join(" · ") : "");
      }
    });
    renderCountdown();
    syncTerminal();
    syncEvents();
  }

  function allPassed(s) {
    var steps = $all(".lab-step");
    return steps.length > 0 && steps.every(function (li) {
      var r = s.results && s.results[li.dataset.step];
      return r && r.passed;
    });
  }

  function renderCountdown() {
    var el = $("[data-countdown]");
    clearInterval(countdownTimer);
    if (!session || session.state !== "ready" || !session.expires_at) { show(el, false); return; }
    var tick = function () {
      var left = Math.max(0, Math.floor((new Date(session.expires_at) - new Date()) / 1000));
      var m = Math.floor(left / 60), sec = left % 60;
      el.textContent = strings.time_left + " " + m + ":" + (sec < 10 ? "0" : "") + sec;
      el.classList.toggle("is-low", left < 300);
    };
    tick();
    show(el, true);
    countdownTimer = setInterval(tick, 1000);
  }

  function syncTerminal() {
    var want = session && (session.state === "ready" || session.state === "resetting");
    show($("[data-terminal-placeholder]"), !want && !terminal);
    if (want && !terminal) {
      terminal = window.VirtlabTerminal.open($("[data-terminal]"), wsBase + "/ws/sessions/" + session.id + "/terminal/", {
        goneText: strings.gone,
        status: function (key) {
          terminalStatus = strings[key] || key;
          if (!noticeTimer) $("[data-terminal-status]").textContent = terminalStatus;
        },
        notice: showNotice,
        gone: function () { terminal = null; }
      });
      terminal.focus();
    }
  }

  // A limit the server applied to the terminal (typing too fast, input dropped…), shown for a while
  // in the terminal's status line; the server's own words when the page has none for its code.
  function showNotice(code, message) {
    var el = $("[data-terminal-status]");
    el.textContent = strings["ws_" + code] || message || code;
    el.classList.add("is-notice");
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () {
      noticeTimer = null;
      el.classList.remove("is-notice");
      el.textContent = terminalStatus;
    }, 6000);
  }

  function syncEvents() {
    if (!isLive(session) || events) return;
    events = new WebSocket(wsBase + "/ws/sessions/" + session.id + "/events/");
    events.onopen = function () { eventsAttempts = 0; };
    events.onmessage = function (ev) {
      var msg = JSON.parse(ev.data);
      if (msg.type === "session") update(msg.session);
      else if (msg.type === "progress") onProgress(msg);
      else if (msg.type === "message") showMessage(msg.message);
      else if (msg.type === "watchers") show($("[data-watching]"), msg.count > 0);
      else if (msg.type === "error" || msg.type === "notice") showError(strings["ws_" + msg.code] || msg.message);
    };
    events.onclose = function (ev) {
      events = null;
      if (ev.code === 4403 || ev.code === 4401 || !isLive(session)) return; // forbidden, signed out
      var delay = Math.min(15000, 500 * Math.pow(2, eventsAttempts++));
      if (ev.code === 4408) delay = 0; // fell behind: the state comes again on connect
      if (ev.code === 4429) delay = Math.max(delay, 5000); // too many tabs: until one closes
      setTimeout(syncEvents, delay);
    };
  }

  // A message from the learner's instructor (a class): text only, newest first, each dismissable.
  // The socket replays the recent ones when it connects, so a message is shown once per id.
  function showMessage(m) {
    var box = $("[data-messages]"), list = $("[data-message-list]");
    if (!m || list.querySelector('[data-message-id="' + m.id + '"]')) return;
    var li = document.createElement("li");
    li.dataset.messageId = String(m.id);
    var who = document.createElement("strong");
    who.textContent = box.dataset.from.replace("%(sender)s", m.sender) + (m.to_class ? " (" + box.dataset.toClass + ")" : "") + ": ";
    var text = document.createElement("span");
    text.textContent = m.text;
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "lab-message-dismiss";
    dismiss.textContent = "×";
    dismiss.title = box.dataset.dismiss;
    dismiss.setAttribute("aria-label", box.dataset.dismiss);
    dismiss.addEventListener("click", function () { li.remove(); show(box, list.children.length > 0); });
    li.appendChild(who);
    li.appendChild(text);
    li.appendChild(dismiss);
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 5) list.removeChild(list.lastChild);
    show(box, true);
  }

  function onProgress(msg) {
    if (msg.stage === "checking") return;
    if (strings[msg.stage]) $("[data-progress]").textContent = strings[msg.stage];
  }

  function update(s) {
    if (session && s.id !== session.id && terminal) { terminal.close(); terminal = null; }
    var previous = session;
    session = s;
    // A new result for a step ends its "checking" spinner.
    Object.keys(checking).forEach(function (n) {
      var before = previous && previous.results && previous.results[n];
      var now = s.results && s.results[n];
      if (now && (!before || before.at !== now.at)) delete checking[n];
      if (s.current_step > n || s.state !== "ready") delete checking[n];
    });
    if (!isLive(s) && events) { events.close(); events = null; }
    render();
  }

  root.addEventListener("click", function (ev) {
    var button = ev.target.closest("[data-action]");
    if (!button) return;
    var action = button.dataset.action, step = parseInt(button.dataset.step || "0", 10);
    showError("");
    if (action === "start") {
      api("POST", "sessions", { lab: root.dataset.lab }).then(update);
    } else if (action === "check") {
      checking[step] = true;
      var verdict = root.querySelector('[data-verdict="' + step + '"]');
      verdict.className = "step-verdict is-checking";
      verdict.textContent = strings.checking;
      api("POST", "sessions/" + session.id + "/check", { step: step }).catch(function () { delete checking[step]; render(); });
    } else if (action === "goto") {
      var question = session && step === session.current_step ? strings.confirm_restart : strings.confirm_goto;
      if (confirm(question)) api("POST", "sessions/" + session.id + "/goto", { step: step });
    } else if (action === "reset") {
      if (confirm(strings.confirm_reset)) api("POST", "sessions/" + session.id + "/reset");
    } else if (action === "extend") {
      api("POST", "sessions/" + session.id + "/extend").then(update);
    } else if (action === "stop") {
      if (confirm(strings.confirm_stop)) api("POST", "sessions/" + session.id + "/stop").then(update);
    }
  });

  render();
})();
