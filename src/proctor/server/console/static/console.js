// proctor console: a little JavaScript, no framework. Loaded from the console's own
// origin (the Content-Security-Policy allows nothing else). Everything it inserts
// was rendered — and escaped — by the server.
"use strict";

(function () {
  function poll(fn, ms) {
    let timer = null;
    const tick = async () => {
      try { await fn(); } catch (e) { /* the next tick tries again */ }
      timer = setTimeout(tick, ms);
    };
    timer = setTimeout(tick, ms);
    return () => clearTimeout(timer);
  }

  // The approvals queue: refreshed when the set of pending requests changes, and
  // never while someone is typing a comment into it.
  const queue = document.getElementById("queue");
  if (queue && queue.dataset.poll) {
    poll(async () => {
      if (queue.contains(document.activeElement) &&
          document.activeElement.tagName === "INPUT") { return; }
      const response = await fetch(queue.dataset.poll, {credentials: "same-origin",
        headers: {"Accept": "text/html"}, cache: "no-store"});
      if (!response.ok) { return; }
      const digest = response.headers.get("X-Queue-Digest") || "";
      if (digest === queue.dataset.digest) { return; }
      queue.innerHTML = await response.text();
      queue.dataset.digest = digest;
      const size = response.headers.get("X-Queue-Size") || "0";
      const shown = document.getElementById("queue-size");
      if (shown) { shown.textContent = size; }
      const badge = document.getElementById("pending-count");
      if (badge) { badge.textContent = size; }
      countdowns();
    }, 2000);
  }

  // The audit stream: new rows on top, with the page's filters.
  const stream = document.getElementById("stream");
  const toggle = document.getElementById("live-toggle");
  let live = true;
  if (toggle) {
    toggle.addEventListener("click", () => {
      live = !live;
      toggle.setAttribute("aria-pressed", String(live));
      toggle.classList.toggle("paused", !live);
      toggle.querySelector(".live-label").textContent = live ? "Live" : "Paused";
    });
  }
  if (stream && stream.dataset.feed) {
    poll(async () => {
      if (!live) { return; }
      const query = new URLSearchParams(stream.dataset.query || "");
      query.set("after", stream.dataset.after || "0");
      const response = await fetch(stream.dataset.feed + "?" + query.toString(),
        {credentials: "same-origin", headers: {"Accept": "text/html"}, cache: "no-store"});
      if (!response.ok) { return; }
      const last = response.headers.get("X-Last-Seq");
      const html = (await response.text()).trim();
      if (last) { stream.dataset.after = last; }
      if (!html) { return; }
      const holder = document.createElement("tbody");
      holder.innerHTML = html;
      const rows = Array.from(holder.querySelectorAll("tr"));
      for (const row of rows.reverse()) {
        row.classList.add("fresh");
        stream.insertBefore(row, stream.firstChild);
      }
      while (stream.children.length > 500) { stream.removeChild(stream.lastChild); }
      const empty = document.getElementById("stream-empty");
      if (empty) { empty.remove(); }
    }, 1500);
  }

  // Forms that change something important ask first.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    const question = form && form.dataset ? form.dataset.confirm : null;
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  // Expiry countdowns on pending approvals.
  function countdowns() {
    const now = Date.now() / 1000;
    for (const el of document.querySelectorAll("[data-expires]")) {
      const left = Math.round(Number(el.dataset.expires) - now);
      if (left <= 0) { el.textContent = "expired"; continue; }
      const m = Math.floor(left / 60), s = left % 60;
      el.textContent = "expires in " + m + ":" + String(s).padStart(2, "0");
    }
  }
  countdowns();
  setInterval(countdowns, 1000);
})();
