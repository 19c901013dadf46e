// The dec2vec page: search the server's index, or compare two texts. Talks to the JSON API only.
"use strict";

const $ = (id) => document.getElementById(id);
const keyField = $("api-key");
keyField.value = localStorage.getItem("dec2vec-key") || "";
keyField.addEventListener("change", () => localStorage.setItem("dec2vec-key", keyField.value));

async function call(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (keyField.value) headers.Authorization = `Bearer ${keyField.value}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
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
    const { data } = await call("/v1/search", {
      query: $("query").value, mode: $("mode").value, k: 10, filters: filters.length ? filters : null,
    });
    $("search-status").textContent = `${data.length} results in ${Math.round(performance.now() - started)} ms`;
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
