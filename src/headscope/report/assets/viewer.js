/* headscope attention-pattern viewer: destination (rows) x source (columns), tokens shown.
   Reads its data from a JSON <script> element; builds the DOM with textContent only. */
(function () {
  "use strict";

  function option(select, value, text) {
    var item = document.createElement("option");
    item.value = value;
    item.textContent = text;
    select.appendChild(item);
  }

  function cell(tag, text, className) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function shade(value) {
    var alpha = Math.max(0, Math.min(1, value));
    return "rgba(31, 90, 180, " + alpha.toFixed(3) + ")";
  }

  function grid(tokens, pattern) {
    var table = document.createElement("table");
    table.className = "hs-grid";
    var head = document.createElement("tr");
    head.appendChild(cell("th", "dest \\ src", "hs-corner"));
    tokens.forEach(function (token) { head.appendChild(cell("th", token, "hs-src")); });
    table.appendChild(head);
    tokens.forEach(function (token, d) {
      var row = document.createElement("tr");
      row.appendChild(cell("th", token, "hs-dest"));
      tokens.forEach(function (source, s) {
        var value = s <= d ? pattern[d][s] : 0;
        var box = cell("td", "", s <= d ? "hs-cell" : "hs-cell hs-future");
        box.style.backgroundColor = shade(value);
        box.title = token + " -> " + source + ": " + value.toFixed(3);
        row.appendChild(box);
      });
      table.appendChild(row);
    });
    return table;
  }

  function mount(root) {
    var data = JSON.parse(document.getElementById(root.dataset.source).textContent);
    var controls = document.createElement("div");
    controls.className = "hs-controls";
    var heads = document.createElement("select");
    heads.setAttribute("aria-label", "head");
    data.heads.forEach(function (h) { option(heads, h, "head " + h); });
    var prompts = document.createElement("select");
    prompts.setAttribute("aria-label", "prompt");
    data.prompts.forEach(function (p, i) { option(prompts, String(i), "prompt " + i); });
    controls.appendChild(heads);
    controls.appendChild(prompts);
    var stage = document.createElement("div");
    stage.className = "hs-stage";
    root.appendChild(controls);
    root.appendChild(stage);

    function draw() {
      var prompt = data.prompts[Number(prompts.value)];
      var pattern = prompt.patterns[heads.value];
      stage.replaceChildren();
      if (pattern) stage.appendChild(grid(prompt.tokens, pattern));
    }
    heads.addEventListener("change", draw);
    prompts.addEventListener("change", draw);
    draw();
  }

  document.querySelectorAll(".hs-viewer").forEach(mount);
})();
