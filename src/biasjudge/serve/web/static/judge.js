// The judge page: POST /v1/judge, show the verdict, its probabilities as a bar, the reasoning;
// "Swap the responses" judges the pair again with the responses exchanged and says whether the
// verdict mirrors. Judged text is written with textContent only (it is untrusted).
"use strict";
(function () {
  const form = document.getElementById("judge-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const MIRROR = { A: "B", B: "A", TIE: "TIE", PARSE_FAIL: "PARSE_FAIL" };
  const WORDS = {
    A: "Response A leans more on stereotypes",
    B: "Response B leans more on stereotypes",
    TIE: "Equivalent (TIE)",
    PARSE_FAIL: "No verdict: the judge's output broke the contract (PARSE_FAIL)",
  };
  let last = null; // {key, result}: the last pair judged as written

  function body(swapped) {
    const choices = Array.from(form.querySelectorAll("input[name=choice]"))
      .map((input) => input.value)
      .filter((text) => text.trim() !== "");
    const a = $("response_a").value;
    const b = $("response_b").value;
    const mode = $("mode").value;
    const out = {
      question: $("question").value,
      choices: choices,
      response_a: swapped ? b : a,
      response_b: swapped ? a : b,
      mode: mode,
      debias: mode === "score" && $("debias").checked,
    };
    if (form.dataset.pairId) out.id = form.dataset.pairId;
    return out;
  }

  class Failure extends Error {
    constructor(status, error) {
      super((error && error.message) || "the server answered " + status);
      this.status = status;
      this.field = error && error.field;
      this.kind = error && error.type;
    }
  }

  async function judge(payload) {
    let reply;
    try {
      reply = await fetch("/v1/judge", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        credentials: "same-origin",
        body: JSON.stringify(payload),
      });
    } catch (err) {
      throw new Failure(0, { message: "the server cannot be reached (" + err.message + ")" });
    }
    let data = null;
    try { data = await reply.json(); } catch (err) { data = null; }
    if (!reply.ok) throw new Failure(reply.status, data && data.error);
    return data;
  }

  function showError(failure) {
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    const box = $("error");
    if (!failure) { box.hidden = true; box.textContent = ""; return; }
    if (failure.status === 401) {
      box.replaceChildren("401: this server needs its API key, and this browser's was not accepted. ", loginLink());
    } else {
      box.textContent = (failure.status ? failure.status + ": " : "") + failure.message;
    }
    box.hidden = false;
    if (failure.field) {
      const name = String(failure.field).split(".")[0];
      const target = name === "choices" ? form.querySelectorAll("input[name=choice]") : form.querySelectorAll("[name=" + name + "]");
      target.forEach((el) => el.classList.add("invalid"));
    }
  }

  function loginLink() {
    const link = document.createElement("a");
    link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = "Enter the key";
    return link;
  }

  function render(panel, result) {
    const judgment = result.judgment;
    const verdict = panel.querySelector(".verdict");
    verdict.className = "verdict v-" + judgment.verdict;
    verdict.replaceChildren();
    const letter = document.createElement("span");
    letter.className = "letter";
    letter.textContent = judgment.verdict;
    verdict.append(letter, " " + (WORDS[judgment.verdict] || judgment.verdict));
    const bar = panel.querySelector(".bar");
    const legend = panel.querySelector(".legend");
    bar.replaceChildren();
    legend.replaceChildren();
    const probs = judgment.probs;
    bar.hidden = legend.hidden = !probs;
    if (probs) {
      const labels = [];
      for (const label of ["A", "B", "TIE"]) {
        const p = probs[label] || 0;
        const seg = document.createElement("span");
        seg.className = "seg seg-" + label;
        seg.dataset.label = label;
        seg.dataset.prob = String(p);
        seg.style.width = (p * 100).toFixed(4) + "%";
        seg.title = label + " " + (p * 100).toFixed(1) + "%";
        bar.append(seg);
        const key = document.createElement("span");
        key.className = "key key-" + label;
        key.textContent = label + " " + (p * 100).toFixed(1) + "%";
        legend.append(key);
        labels.push(key.textContent);
      }
      bar.setAttribute("aria-label", labels.join(", "));
    }
    const box = panel.querySelector(".reasoning-box");
    box.hidden = !judgment.reasoning;
    panel.querySelector(".reasoning").textContent = judgment.reasoning || "";
    const t = result.timings;
    panel.querySelector(".timing").textContent =
      judgment.judge + " · " + judgment.mode + " mode · " + t.total_ms.toFixed(0) + " ms (batch of " + result.batch_size + ")";
    panel.hidden = false;
    $("results").hidden = false;
  }

  function busy(on) {
    for (const id of ["judge", "swap"]) $(id).disabled = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
  }

  async function original() {
    const payload = body(false);
    const key = JSON.stringify(payload);
    if (last && last.key === key) return last.result;
    const result = await judge(payload);
    last = { key: key, result: result };
    render($("result-original"), result);
    return result;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(null);
    busy(true);
    try {
      last = null;
      await original();
      $("result-swapped").hidden = true;
      $("mirror").hidden = true;
    } catch (failure) {
      showError(failure);
    } finally {
      busy(false);
    }
  });

  $("swap").addEventListener("click", async () => {
    if (!form.reportValidity()) return;
    showError(null);
    busy(true);
    try {
      const [first, second] = await Promise.all([original(), judge(body(true))]);
      render($("result-swapped"), second);
      const a = first.judgment.verdict;
      const s = second.judgment.verdict;
      const line = $("mirror");
      line.replaceChildren();
      const strong = document.createElement("strong");
      if (a === "PARSE_FAIL" || s === "PARSE_FAIL") {
        line.className = "mirror";
        line.append("Under swap: not comparable (a verdict did not parse).");
      } else if (s === MIRROR[a]) {
        line.className = "mirror good";
        strong.textContent = "mirrors";
        line.append("The verdict ", strong, ": as written " + a + ", swapped " + s + " (= " + MIRROR[s] + " in the original order).");
      } else {
        line.className = "mirror bad";
        strong.textContent = "does not mirror";
        line.append("The verdict ", strong, ": as written " + a + ", swapped " + s + " (= " + MIRROR[s] +
          " in the original order; a judge without position bias would say " + MIRROR[a] + ").");
      }
      line.dataset.mirrors = String(s === MIRROR[a]);
      line.hidden = false;
    } catch (failure) {
      showError(failure);
    } finally {
      busy(false);
    }
  });

  $("mode").addEventListener("change", () => {
    const generate = $("mode").value === "generate";
    $("debias").disabled = generate;
    if (generate) $("debias").checked = false;
  });

  $("add-choice").addEventListener("click", () => {
    const box = $("choices");
    const count = box.querySelectorAll(".choice").length;
    if (count >= Number(box.dataset.max)) return;
    const row = document.createElement("div");
    row.className = "choice";
    const letter = document.createElement("span");
    letter.className = "letter";
    letter.textContent = "ABCDE"[count];
    const input = document.createElement("input");
    input.name = "choice";
    input.setAttribute("aria-label", "choice " + "ABCDE"[count]);
    row.append(letter, input);
    box.insertBefore(row, $("add-choice"));
    if (count + 1 >= Number(box.dataset.max)) $("add-choice").hidden = true;
    input.focus();
  });

  $("example").addEventListener("click", () => {
    const example = JSON.parse($("example-pair").textContent);
    $("question").value = example.question;
    $("response_a").value = example.response_a;
    $("response_b").value = example.response_b;
    const inputs = form.querySelectorAll("input[name=choice]");
    inputs.forEach((input, i) => { input.value = example.choices[i] || ""; });
    delete form.dataset.pairId;
  });
})();
