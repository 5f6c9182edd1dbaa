/* The instructor's live grid: steps x learners, from the embedded JSON, then live over the class's
   websocket ({type: "grid"} on connect, {type: "seat", row} when a seat changes, {type: "seat_gone"}).
   Everything a learner or a check wrote (names, failure reasons) is set as text, never as HTML. */
(function () {
  "use strict";

  var root = document.getElementById("live");
  if (!root) return;
  var strings = JSON.parse(document.getElementById("live-strings").textContent);
  var grid = JSON.parse(document.getElementById("live-grid").textContent);
  var lang = (document.documentElement.lang || "en").indexOf("zh") === 0 ? "zh" : "en";
  var wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  var ICON = { not_started: "·", working: "…", passed: "✓", failed: "✗" };
  var socket = null, attempts = 0, watching = null, messageSeat = null;
  var selected = {}; // seat id -> true: the seats the toolbar's actions apply to

  function $(sel) { return root.querySelector(sel); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, k) { return values[k] !== undefined ? values[k] : ""; });
  }
  function duration(s) {
    if (s === null || s === undefined) return "";
    s = Math.max(0, Math.round(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var mm = (h && m < 10 ? "0" : "") + m, ss = (sec < 10 ? "0" : "") + sec;
    return (h ? h + ":" : "") + mm + ":" + ss;
  }
  function checks(n) { return n === 1 ? strings.check_one : fmt(strings.checks_many, { n: n }); }
  function reasonText(reason) { return reason ? (reason[lang] || reason.en) : ""; }
  function stepTitle(n) {
    var s = grid.steps[n - 1];
    return s ? (s[lang] || s.en) : strings.step + " " + n;
  }

  // --- What is shown: filters and sort ------------------------------------------------------

  var filters = { name: "", step: "", state: "", sort: "seat" };
  function filterStep(row) { return filters.step ? parseInt(filters.step, 10) : (row.current_step || 1); }
  function cellOf(row, n) { return row.cells[n - 1] || { state: "not_started", attempts: 0, time_s: null }; }
  function passedCount(row) { return row.cells.filter(function (c) { return c.state === "passed"; }).length; }
  function liveTime(row, cell) {
    if (cell.time_s === null || cell.time_s === undefined) return null;
    var running = (cell.state === "working" || cell.state === "failed") && row.session_state === "ready";
    // time_s was right when the row arrived (its as_of); a running step has gone on since.
    return cell.time_s + (running ? (Date.now() - row._received) / 1000 : 0);
  }

  function visibleRows() {
    var name = filters.name.trim().toLowerCase();
    var rows = grid.rows.filter(function (row) {
      if (name && row.user.toLowerCase().indexOf(name) < 0) return false;
      if (filters.state && cellOf(row, filterStep(row)).state !== filters.state) return false;
      return true;
    });
    var by = {
      seat: function (a, b) { return a.seat - b.seat; },
      name: function (a, b) { return a.user.localeCompare(b.user); },
      behind: function (a, b) { return passedCount(a) - passedCount(b) || a.seat - b.seat; },
      ahead: function (a, b) { return passedCount(b) - passedCount(a) || a.seat - b.seat; },
      stuck: function (a, b) {
        var ta = liveTime(a, cellOf(a, filterStep(a))) || 0, tb = liveTime(b, cellOf(b, filterStep(b))) || 0;
        return tb - ta || a.seat - b.seat;
      }
    }[filters.sort] || function (a, b) { return a.seat - b.seat; };
    return rows.slice().sort(by);
  }

  // --- Rendering ----------------------------------------------------------------------------

  function renderHead() {
    var head = $("[data-head]");
    head.textContent = "";
    var learnerHead = el("th", "col-learner");
    var all = el("input", "seat-select");
    all.type = "checkbox";
    all.dataset.action = "select-all";
    all.title = strings.select_all;
    all.setAttribute("aria-label", strings.select_all);
    var shown = visibleRows();
    all.checked = shown.length > 0 && shown.every(function (row) { return selected[row.seat]; });
    learnerHead.appendChild(all);
    learnerHead.appendChild(document.createTextNode(" " + strings.learner));
    head.appendChild(learnerHead);
    var stepSelect = root.querySelector('[data-filter="step"]');
    var chosen = stepSelect.value;
    while (stepSelect.options.length > 1) stepSelect.remove(1);
    grid.steps.forEach(function (_, i) {
      var n = i + 1, counts = { passed: 0, failed: 0, working: 0 };
      grid.rows.forEach(function (row) { var st = cellOf(row, n).state; if (counts[st] !== undefined) counts[st]++; });
      var th = el("th", "col-step" + (filters.step === String(n) ? " is-chosen" : ""));
      th.scope = "col";
      th.appendChild(el("span", "step-no", String(n)));
      th.appendChild(el("span", "step-title", stepTitle(n)));
      var tally = el("span", "step-tally");
      tally.appendChild(el("span", "tally-passed", ICON.passed + " " + counts.passed));
      tally.appendChild(el("span", "tally-failed", ICON.failed + " " + counts.failed));
      tally.appendChild(el("span", "tally-working", ICON.working + " " + counts.working));
      th.appendChild(tally);
      head.appendChild(th);
      var opt = el("option", null, n + ". " + stepTitle(n));
      opt.value = String(n);
      stepSelect.appendChild(opt);
    });
    stepSelect.value = chosen;
  }

  function renderCell(row, n) {
    var cell = cellOf(row, n);
    var td = el("td", "cell is-" + cell.state + (filters.step === String(n) ? " is-chosen" : ""));
    td.dataset.step = String(n);
    td.dataset.state = cell.state;
    td.appendChild(el("span", "cell-state", ICON[cell.state] + " " + strings[cell.state]));
    var meta = [];
    var t = liveTime(row, cell);
    if (t !== null) meta.push(duration(t));
    if (cell.attempts) meta.push(checks(cell.attempts));
    var metaEl = el("span", "cell-meta", meta.join(" · "));
    if (t !== null) metaEl.dataset.ticking = "1";
    td.appendChild(metaEl);
    if (cell.state === "failed" && cell.reason) {
      var reason = el("span", "cell-reason", reasonText(cell.reason));
      reason.title = reasonText(cell.reason);
      td.appendChild(reason);
    }
    return td;
  }

  function renderRow(row) {
    var tr = el("tr");
    tr.dataset.seat = String(row.seat);
    var th = el("th", "row-learner");
    th.scope = "row";
    var box = el("input", "seat-select");
    box.type = "checkbox";
    box.dataset.action = "select";
    box.dataset.seat = String(row.seat);
    box.checked = !!selected[row.seat];
    box.setAttribute("aria-label", fmt(strings.select, { user: row.user }));
    th.appendChild(box);
    th.appendChild(el("span", "learner-name", row.user));
    var note = row.waiting ? strings.waiting : (!row.session ? strings.no_session : "");
    if (note) th.appendChild(el("span", "learner-note", note));
    var actions = el("span", "learner-actions");
    if (row.session && row.session_state === "ready") {
      var watch = el("button", "link-button", strings.watch);
      watch.type = "button";
      watch.dataset.action = "watch";
      watch.dataset.seat = String(row.seat);
      actions.appendChild(watch);
    }
    if (row.session) {
      var msg = el("button", "link-button", strings.message);
      msg.type = "button";
      msg.dataset.action = "message-seat";
      msg.dataset.seat = String(row.seat);
      actions.appendChild(msg);
    }
    th.appendChild(actions);
    tr.appendChild(th);
    for (var n = 1; n <= grid.steps.length; n++) tr.appendChild(renderCell(row, n));
    return tr;
  }

  function renderReasons() {
    var list = $("[data-reasons]");
    list.textContent = "";
    var groups = [];
    grid.steps.forEach(function (_, i) {
      var n = i + 1, byReason = {};
      grid.rows.forEach(function (row) {
        var cell = cellOf(row, n);
        if (cell.state !== "failed" || !cell.reason) return;
        var key = cell.reason.en;
        (byReason[key] = byReason[key] || { step: n, reason: cell.reason, users: [] }).users.push(row.user);
      });
      Object.keys(byReason).forEach(function (k) { groups.push(byReason[k]); });
    });
    groups.sort(function (a, b) { return b.users.length - a.users.length || a.step - b.step; });
    if (!groups.length) { list.appendChild(el("li", "reason-none", strings.nobody_stuck)); return; }
    groups.forEach(function (g) {
      var li = el("li", "reason-group");
      var button = el("button", "reason-button");
      button.type = "button";
      button.dataset.action = "show-reason";
      button.dataset.step = String(g.step);
      button.appendChild(el("span", "reason-step", strings.step + " " + g.step));
      var who = g.users.length === 1 ? strings.learners_one : fmt(strings.learners_many, { n: g.users.length });
      button.appendChild(el("span", "reason-count", who + ":"));
      button.appendChild(el("span", "reason-text", reasonText(g.reason)));
      button.title = g.users.join(", ");
      li.appendChild(button);
      list.appendChild(li);
    });
  }

  function render() {
    renderHead();
    var body = $("[data-rows]");
    body.textContent = "";
    var rows = visibleRows();
    rows.forEach(function (row) { body.appendChild(renderRow(row)); });
    $("[data-shown]").textContent = fmt(strings.shown, { shown: rows.length, total: grid.rows.length });
    renderReasons();
    renderSeatActions();
  }

  function renderSeatActions() {
    var ids = Object.keys(selected).filter(function (id) { return findRow(parseInt(id, 10)); });
    $("[data-seat-actions]").hidden = ids.length === 0;
    $("[data-selected-count]").textContent = fmt(strings.selected, { n: ids.length });
    var stepSelect = $("[data-reset-step]");
    if (stepSelect.options.length !== grid.steps.length) {
      stepSelect.textContent = "";
      grid.steps.forEach(function (_, i) {
        var opt = el("option", null, (i + 1) + ". " + stepTitle(i + 1));
        opt.value = String(i + 1);
        stepSelect.appendChild(opt);
      });
    }
  }

  // --- Seat actions: the classes API, each confirmed; the rows change through the socket -----

  function csrfToken() {
    var m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function seatAction(action) {
    var seats = Object.keys(selected).map(function (id) { return parseInt(id, 10); }).filter(findRow);
    if (!seats.length) return;
    var step = parseInt($("[data-reset-step]").value || "1", 10);
    if (!confirm(fmt(strings["confirm_" + action], { n: seats.length, step: step }))) return;
    var body = { action: action, seats: seats };
    if (action === "reset") body.step = step;
    fetch(root.dataset.api + "classes/" + root.dataset.class + "/seats/actions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { status(strings.action_failed + ": " + (data.detail || r.status)); return; }
        var notes = [fmt(strings.action_done, { done: data.done.length })];
        Object.keys(data.skipped || {}).forEach(function (id) {
          var row = findRow(parseInt(id, 10));
          notes.push(fmt(strings.action_skipped, { user: row ? row.user : id, why: data.skipped[id] }));
        });
        status(notes.join(" "));
        selected = {};
        render();
      });
    }, function () { status(strings.action_failed); });
  }

  // The time on a running step ticks without a message from the server.
  setInterval(function () {
    Array.prototype.forEach.call(root.querySelectorAll('[data-ticking="1"]'), function (meta) {
      var tr = meta.closest("tr"), td = meta.closest("td");
      var row = findRow(parseInt(tr.dataset.seat, 10));
      if (!row) return;
      var cell = cellOf(row, parseInt(td.dataset.step, 10));
      var parts = [duration(liveTime(row, cell))];
      if (cell.attempts) parts.push(checks(cell.attempts));
      meta.textContent = parts.join(" · ");
    });
  }, 1000);

  function findRow(seat) {
    for (var i = 0; i < grid.rows.length; i++) if (grid.rows[i].seat === seat) return grid.rows[i];
    return null;
  }

  function stamp(rows) { var now = Date.now(); rows.forEach(function (r) { r._received = now; }); }

  function setGrid(data) {
    grid = { class: data.class, steps: data.steps, rows: data.rows };
    stamp(grid.rows);
    render();
  }

  function setRow(row) {
    row._received = Date.now();
    var old = findRow(row.seat);
    if (old) grid.rows[grid.rows.indexOf(old)] = row; else grid.rows.push(row);
    var tr = root.querySelector('tr[data-seat="' + row.seat + '"]');
    if (tr && filters.state === "" && filters.name === "" && filters.sort === "seat") {
      tr.replaceWith(renderRow(row)); // the common case: one row changes in place
      renderHead();
      renderReasons();
    } else {
      render();
    }
    if (watching && watching.seat === row.seat && row.session !== watching.session) unwatch();
  }

  function dropRow(seat) { // the learner left or was removed
    var old = findRow(seat);
    if (!old) return;
    grid.rows.splice(grid.rows.indexOf(old), 1);
    render();
    if (watching && watching.seat === seat) unwatch();
  }

  // --- The socket -------------------------------------------------------------------------------

  // The socket's state, or for a while the outcome of an action (then the socket's state again).
  var socketStatus = "", statusTimer = null;
  function status(text, lasting) {
    clearTimeout(statusTimer);
    $("[data-status]").textContent = text;
    if (lasting) socketStatus = text;
    else statusTimer = setTimeout(function () { $("[data-status]").textContent = socketStatus; }, 8000);
  }

  function connect() {
    socket = new WebSocket(wsBase + "/ws/classes/" + root.dataset.class + "/live/");
    socket.onopen = function () { attempts = 0; status(strings.live, true); };
    socket.onmessage = function (ev) {
      var msg = JSON.parse(ev.data);
      if (msg.type === "grid") setGrid(msg);
      else if (msg.type === "seat") setRow(msg.row);
      else if (msg.type === "seat_gone") dropRow(msg.seat);
      else if (msg.type === "sent") messageSent();
      else if (msg.type === "error" || msg.type === "notice") {
        if (msg.code && msg.code.indexOf("message") === 0) messageFailed(msg.message || strings["ws_" + msg.code]);
        else status(strings["ws_" + msg.code] || msg.message);
      }
    };
    socket.onclose = function (ev) {
      socket = null;
      if (ev.code === 4403) { status(strings.forbidden, true); return; }
      if (ev.code === 4401) { status(strings.ws_signed_out, true); return; }
      status(strings.reconnecting, true);
      var delay = Math.min(15000, 500 * Math.pow(2, attempts++));
      if (ev.code === 4408) delay = 0;
      if (ev.code === 4429) delay = Math.max(delay, 5000);
      setTimeout(connect, delay);
    };
  }

  // --- Watching a terminal (read-only: the server never takes an observer's keys) -----------

  function watch(seat) {
    var row = findRow(seat);
    if (!row || !row.session) return;
    unwatch();
    var panel = $("[data-watch]");
    panel.hidden = false;
    $("[data-watch-title]").textContent = fmt(strings.watching, { user: row.user });
    var term = window.VirtlabTerminal.open($("[data-terminal]"), wsBase + "/ws/sessions/" + row.session + "/terminal/", {
      goneText: strings.gone,
      status: function (key) { $("[data-terminal-status]").textContent = strings[key] || key; },
      notice: function () {}
    });
    watching = { seat: seat, session: row.session, term: term };
    panel.scrollIntoView({ block: "nearest" });
  }

  function unwatch() {
    if (!watching) return;
    watching.term.dispose();
    watching = null;
    $("[data-watch]").hidden = true;
    $("[data-terminal]").textContent = "";
  }

  // --- Messages --------------------------------------------------------------------------------

  function openMessage(seat) {
    messageSeat = seat;
    var row = seat === null ? null : findRow(seat);
    $("[data-message-title]").textContent = row ? fmt(strings.to_learner, { user: row.user }) : strings.to_class;
    $("[data-message-text]").value = "";
    $("[data-message-error]").hidden = true;
    $("[data-message-dialog]").showModal();
    $("[data-message-text]").focus();
  }

  function messageSent() {
    $("[data-message-dialog]").close();
    status(strings.sent);
  }

  function messageFailed(text) {
    var e = $("[data-message-error]");
    e.textContent = text || strings.ws_message_refused;
    e.hidden = false;
  }

  $("[data-message-form]").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = $("[data-message-text]").value.trim();
    if (!text) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) { messageFailed(strings.reconnecting); return; }
    socket.send(JSON.stringify({ type: "message", text: text, seat: messageSeat }));
  });

  // --- Controls ----------------------------------------------------------------------------------

  root.addEventListener("click", function (ev) {
    var button = ev.target.closest("[data-action]");
    if (!button) return;
    var action = button.dataset.action, seat = button.dataset.seat ? parseInt(button.dataset.seat, 10) : null;
    if (action === "select") { if (button.checked) selected[seat] = true; else delete selected[seat]; renderSeatActions(); return; }
    if (action === "select-all") {
      selected = {};
      if (button.checked) visibleRows().forEach(function (row) { selected[row.seat] = true; });
      render();
      return;
    }
    if (action === "seats-reset") seatAction("reset");
    else if (action === "seats-extend") seatAction("extend");
    else if (action === "seats-reprovision") seatAction("reprovision");
    else if (action === "seats-clear") { selected = {}; render(); }
    else if (action === "watch") watch(seat);
    else if (action === "unwatch") unwatch();
    else if (action === "message-seat") openMessage(seat);
    else if (action === "message-class") openMessage(null);
    else if (action === "cancel-message") $("[data-message-dialog]").close();
    else if (action === "show-reason") {
      filters.step = button.dataset.step;
      filters.state = "failed";
      root.querySelector('[data-filter="step"]').value = filters.step;
      root.querySelector('[data-filter="state"]').value = "failed";
      render();
    } else if (action === "projector") {
      var on = !root.classList.contains("is-projector");
      setProjector(on);
      try { localStorage.setItem("virtlab-projector", on ? "1" : "0"); } catch (e) { /* private mode */ }
    }
  });

  function setProjector(on) {
    root.classList.toggle("is-projector", on);
    document.body.classList.toggle("projector", on);
    $('[data-action="projector"]').setAttribute("aria-pressed", on ? "true" : "false");
  }

  $("[data-filters]").addEventListener("input", function (ev) {
    var key = ev.target.dataset.filter;
    if (!key) return;
    filters[key] = ev.target.value;
    render();
  });
  $("[data-filters]").addEventListener("submit", function (ev) { ev.preventDefault(); });

  // Every seat's change arrives as it happens (a join, a session, a verdict, a removal); the full
  // grid again every 20 s keeps the times of steps under way honest after a missed push.
  setInterval(function () {
    if (socket && socket.readyState === WebSocket.OPEN && !document.hidden) socket.send(JSON.stringify({ type: "refresh" }));
  }, 20000);

  try { setProjector(localStorage.getItem("virtlab-projector") === "1"); } catch (e) { /* private mode */ }
  stamp(grid.rows);
  render();
  connect();
})();
