// The browse page: the filters ask the server for the matching rows (GET /eval/rows, the same
// filtering as the page itself) and keep the URL in step; a row opens its pair.
"use strict";
(function () {
  const form = document.getElementById("filters");
  const rows = document.getElementById("pair-rows");
  if (!form || !rows) return;
  const count = document.getElementById("count");
  const apply = document.getElementById("apply");
  if (apply) apply.hidden = true; // the selects apply themselves

  function query() {
    const params = new URLSearchParams();
    for (const select of form.querySelectorAll("select")) {
      if (select.value) params.set(select.name, select.value);
    }
    return params.toString();
  }

  let pending = 0;
  async function refresh() {
    const q = query();
    const ticket = ++pending;
    form.setAttribute("aria-busy", "true");
    try {
      const reply = await fetch("/eval/rows" + (q ? "?" + q : ""), { credentials: "same-origin" });
      if (ticket !== pending) return; // a newer choice is on its way
      if (!reply.ok) {
        if (reply.status === 401) {
          const link = document.createElement("a");
          link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
          link.textContent = "enter the key";
          count.replaceChildren("401: the server needs its API key: ", link);
        } else {
          count.textContent = "error " + reply.status;
        }
        return;
      }
      rows.innerHTML = await reply.text(); // server-rendered, autoescaped rows
      count.textContent = rows.rows.length + " of " + count.dataset.total + " rows";
      history.replaceState(null, "", "/eval" + (q ? "?" + q : "") + "#pairs");
    } finally {
      if (ticket === pending) form.setAttribute("aria-busy", "false");
    }
  }

  form.addEventListener("change", refresh);
  form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  const clear = document.getElementById("clear");
  if (clear) {
    clear.addEventListener("click", (event) => {
      event.preventDefault();
      form.querySelectorAll("select").forEach((select) => { select.value = ""; });
      refresh();
    });
  }
  rows.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    const row = event.target.closest("tr[data-href]");
    if (row) window.location.href = row.dataset.href;
  });
})();
