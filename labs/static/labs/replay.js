// The replay page: asciinema-player plays the session's record; its scrubber carries the markers
// (steps, checks ✓/✗ with their reason, reverts), listed below it too, with "step N first failed" jumps.
"use strict";
(function () {
  const config = JSON.parse(document.getElementById("replay-config").textContent);
  const strings = JSON.parse(document.getElementById("replay-strings").textContent);
  const holder = document.getElementById("replay-player");
  const speedSelect = document.getElementById("replay-speed");
  const idleBox = document.getElementById("replay-idle");
  const list = document.getElementById("replay-marks");
  const jumps = document.getElementById("replay-jumps");
  const SPEEDS = [1, 2, 4, 8, 16];
  const IDLE_LIMIT_S = 2;
  let recording = null; // [header, ...events], the markers' data made into labels
  let marks = []; // {t, mark, label, index}
  let player = null;

  const fill = (text, values) => text.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));
  const clock = (t) => `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}`;

  function label(mark) {
    const reason = mark.reason ? mark.reason[config.lang === "zh-hans" ? "zh" : "en"] || mark.reason.en : "";
    switch (mark.kind) {
      case "check":
        return `${mark.ok ? "✓" : "✗"} ${fill(strings.step, mark)} ${mark.ok ? strings.passed : strings.failed}` +
          (!mark.ok && reason ? ` — ${reason}` : "");
      case "revert": return `↺ ${fill(strings.revert, mark)}`;
      case "step": return `▸ ${fill(strings.step, mark)}`;
      case "checkpoint": return `⚑ ${fill(strings.checkpoint, mark)}`;
      case "state": return `● ${fill(strings.state, { state: config.states[mark.state] || mark.state })}`;
      case "cut": return `✂ ${strings.cut}`;
      case "resumed": return `↻ ${strings.resumed}`;
      default: return mark.kind;
    }
  }

  function parse(text) {
    const lines = text.split("\n");
    const header = JSON.parse(lines[0]);
    const events = [];
    for (const line of lines.slice(1)) {
      if (!line.startsWith("[")) continue;
      let event;
      try { event = JSON.parse(line); } catch (_) { continue; }
      if (event[1] === "m") {
        let mark;
        try { mark = JSON.parse(event[2]); } catch (_) { mark = { kind: String(event[2]) }; }
        const text = label(mark);
        marks.push({ t: event[0], mark, label: text, index: marks.length });
        events.push([event[0], "m", text]);
      } else if (event[1] !== "i") {
        events.push(event); // input is in the record; the screen shows its echo
      }
    }
    return [header, ...events];
  }

  function create(startAt, autoPlay) {
    if (player) player.dispose();
    holder.replaceChildren();
    player = AsciinemaPlayer.create({ data: recording }, holder, {
      speed: Number(speedSelect.value), idleTimeLimit: idleBox.checked ? IDLE_LIMIT_S : undefined,
      startAt, autoPlay, fit: "width", preload: true, controls: true,
    });
    player.addEventListener("marker", ({ index }) => highlight(index));
  }

  // The player's scrubber ticks are plain: give each the colour of what it marks, whenever the
  // player (re)draws them.
  const observer = new MutationObserver(() => colourScrubber());
  observer.observe(holder, { childList: true, subtree: true });

  function colourScrubber() {
    holder.querySelectorAll(".ap-marker-container").forEach((tick, i) => {
      const cls = marks[i] ? `replay-tick-${kindClass(marks[i].mark)}` : "";
      if (cls && !tick.classList.contains(cls)) tick.classList.add(cls);
    });
  }

  const kindClass = (mark) => (mark.kind === "check" ? (mark.ok ? "ok" : "fail") : mark.kind);

  function highlight(index) {
    list.querySelectorAll("[aria-current]").forEach((el) => el.removeAttribute("aria-current"));
    const item = list.children[index];
    if (item) item.setAttribute("aria-current", "step");
  }

  function seekMark(index) {
    player.pause();
    player.seek({ marker: index }).then(() => highlight(index));
  }

  function render() {
    list.replaceChildren();
    if (marks.length === 0) {
      const empty = document.createElement("li");
      empty.textContent = strings.no_marks;
      list.append(empty);
    }
    for (const entry of marks) {
      const item = document.createElement("li");
      item.className = `replay-mark replay-mark-${kindClass(entry.mark)}`;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link-button";
      button.textContent = `${clock(entry.t)}  ${entry.label}`;
      button.title = entry.label;
      button.addEventListener("click", () => seekMark(entry.index));
      item.append(button);
      list.append(item);
    }
    const firstFailed = new Map();
    for (const entry of marks) {
      if (entry.mark.kind === "check" && !entry.mark.ok && !firstFailed.has(entry.mark.step)) {
        firstFailed.set(entry.mark.step, entry);
      }
    }
    for (const [step, entry] of [...firstFailed].sort((a, b) => a[0] - b[0])) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button replay-jump";
      button.dataset.step = step;
      button.textContent = fill(strings.first_failed, { step });
      button.addEventListener("click", () => seekMark(entry.index));
      jumps.append(button);
    }
  }

  function restart() {
    const at = player ? player.getCurrentTime() : 0;
    Promise.resolve(at).then((t) => create(t || 0, false));
  }

  function setSpeed(step) {
    const i = SPEEDS.indexOf(Number(speedSelect.value));
    speedSelect.value = String(SPEEDS[Math.max(0, Math.min(SPEEDS.length - 1, i + step))]);
    restart();
  }

  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === ">") setSpeed(1);
    else if (e.key === "<") setSpeed(-1);
    else if (e.key === "i") { idleBox.checked = !idleBox.checked; restart(); }
    else if (e.key === "x") { const first = jumps.querySelector("button"); if (first) first.click(); }
    else return;
    e.preventDefault();
  });
  speedSelect.addEventListener("change", restart);
  idleBox.addEventListener("change", restart);

  fetch(config.cast, { credentials: "same-origin" })
    .then((response) => { if (!response.ok) throw new Error(response.status); return response.text(); })
    .then((text) => {
      recording = parse(text);
      render();
      create(0, false);
      document.body.dataset.replayReady = "1";
    })
    .catch(() => { holder.textContent = strings.load_failed; });
})();
