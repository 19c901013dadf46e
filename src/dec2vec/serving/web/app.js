// The dec2vec page: search the server's index, ask it a question, or compare two texts. JSON API only.
"use strict";

const $ = (id) => document.getElementById(id);
const keyField = $("api-key");
keyField.value = localStorage.getItem("dec2vec-key") || "";
keyField.addEventListener("change", () => localStorage.setItem("dec2vec-key", keyField.value));

function headers() {
  const sent = { "Content-Type": "application/json" };
  if (keyField.value) sent.Authorization = `Bearer ${keyField.value}`;
  return sent;
}

async function call(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
  return data;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // never innerHTML: documents are untrusted text
  return node;
}

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("[role=tab]")) {
      other.setAttribute("aria-selected", String(other === tab));
      $(other.dataset.panel).hidden = other !== tab;
    }
  });
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const filters = $("filters").value.split(",").map((f) => f.trim()).filter(Boolean);
  const results = $("results");
  $("search-status").textContent = "searching…";
  results.replaceChildren();
  try {
    const started = performance.now();
    const { data, auto_filter } = await call("/v1/search", {
      query: $("query").value, mode: $("mode").value, k: 10, filters: filters.length ? filters : null,
      auto_filter: $("auto-filter").checked,
    });
    const read = auto_filter
      ? ` · auto-filter: ${Object.entries(auto_filter.filters).map(([k, v]) => `${k}=${v}`).join(", ") || "none"}`
      : "";
    $("search-status").textContent =
      `${data.length} results in ${Math.round(performance.now() - started)} ms${read}`;
    for (const hit of data) {
      const item = element("div", "hit");
      item.dataset.id = hit.id;
      item.append(element("h3", "", hit.title || hit.id));
      item.append(element("div", "snippet", hit.text.length > 300 ? `${hit.text.slice(0, 300)}…` : hit.text));
      const ranks = Object.entries(hit.ranks).map(([name, rank]) => `${name} #${rank}`).join(" · ");
      item.append(element("div", "meta", `id ${hit.id} · score ${hit.score.toFixed(4)} · ${ranks}`));
      results.append(item);
    }
  } catch (error) {
    $("search-status").textContent = "";
    results.append(element("p", "error", error.message));
  }
});

// The answer with each [n] as a link to its source below; built from text nodes, never innerHTML.
function withCitations(text, count) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    const number = Number(match[1]);
    if (number < 1 || number > count) continue;
    nodes.push(document.createTextNode(text.slice(last, match.index)));
    const link = element("a", "citation", match[0]);
    link.href = `#source-${number}`;
    nodes.push(link);
    last = match.index + match[0].length;
  }
  nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

$("ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const answer = $("answer");
  const sources = $("sources");
  answer.className = "";
  answer.textContent = "";
  sources.replaceChildren();
  $("ask-status").textContent = "retrieving and answering…";
  const started = performance.now();
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        messages: [{ role: "user", content: $("question").value }],
        stream: true,
        dec2vec: { search: { k: Number($("ask-k").value) } },
      }),
    });
    if (!response.ok) {
      const data = await response.json();
      throw new Error(data.error ? data.error.message : response.statusText);
    }
    // Server-sent events: "data: {json}" lines; the last chunk carries the sources under "dec2vec".
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let text = "";
    let grounding = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const line of events) {
        const payload = line.replace(/^data: /, "");
        if (payload === "[DONE]") continue;
        const chunk = JSON.parse(payload);
        if (chunk.error) throw new Error(chunk.error.message);
        text += chunk.choices[0].delta.content || "";
        answer.textContent = text;
        if (chunk.dec2vec) grounding = chunk.dec2vec;
      }
    }
    const found = grounding ? grounding.sources : [];
    answer.replaceChildren(...withCitations(text, found.length));
    for (const source of found) {
      const item = element("li", source.cited ? "cited" : "");
      item.id = `source-${source.number}`;
      item.dataset.id = source.id;
      item.append(element("strong", "", source.title || source.id));
      item.append(element("div", "snippet", source.text.length > 300 ? `${source.text.slice(0, 300)}…` : source.text));
      item.append(element("div", "meta", `id ${source.id} · score ${source.score.toFixed(4)}${source.cited ? " · cited" : ""}`));
      sources.append(item);
    }
    $("ask-status").textContent = `answered in ${Math.round(performance.now() - started)} ms from ${found.length} passages`;
  } catch (error) {
    $("ask-status").textContent = "";
    answer.className = "error";
    answer.textContent = error.message;
  }
});

$("similarity-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("similarity-result");
  out.className = "";
  out.textContent = "comparing…";
  try {
    const { data } = await call("/v1/embeddings", { input: [$("text-a").value, $("text-b").value] });
    const [a, b] = data.map((d) => d.embedding);
    const cosine = a.reduce((sum, x, i) => sum + x * b[i], 0); // the server's vectors are unit length
    out.textContent = `cosine similarity: ${cosine.toFixed(4)}`;
  } catch (error) {
    out.className = "error";
    out.textContent = error.message;
  }
});
