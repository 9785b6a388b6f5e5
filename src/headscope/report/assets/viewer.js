/* headscope attention-pattern viewer: destination (rows) x source (columns), tokens shown.
   Any head and any example prompt; a colour scale; the value of a cell on hover.
   Reads its data from a JSON <script> element; builds the DOM with textContent only. */
(function () {
  "use strict";

  // plotly's "Blues" scale: attention 0 is white, 1 is dark blue.
  var STOPS = [
    [0, [247, 251, 255]], [0.125, [222, 235, 247]], [0.25, [198, 219, 239]], [0.375, [158, 202, 225]],
    [0.5, [107, 174, 214]], [0.625, [66, 146, 198]], [0.75, [33, 113, 181]], [0.875, [8, 81, 156]],
    [1, [8, 48, 107]],
  ];

  function colour(value) {
    var v = Math.max(0, Math.min(1, value));
    for (var i = 1; i < STOPS.length; i++) {
      if (v <= STOPS[i][0]) {
        var a = STOPS[i - 1], b = STOPS[i], t = (v - a[0]) / (b[0] - a[0]);
        var rgb = a[1].map(function (c, k) { return Math.round(c + t * (b[1][k] - c)); });
        return "rgb(" + rgb.join(", ") + ")";
      }
    }
    return "rgb(8, 48, 107)";
  }

  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function option(parent, value, text) {
    var item = element("option", text);
    item.value = value;
    parent.appendChild(item);
  }

  function legend() {
    var box = element("div", undefined, "hs-legend");
    var bar = element("div", undefined, "hs-bar");
    bar.style.background = "linear-gradient(to right, " +
      STOPS.map(function (s) { return colour(s[0]) + " " + (100 * s[0]) + "%"; }).join(", ") + ")";
    box.appendChild(element("span", "attention 0"));
    box.appendChild(bar);
    box.appendChild(element("span", "1"));
    return box;
  }

  function headSelect(heads) {
    var select = element("select");
    select.setAttribute("aria-label", "head");
    [["this section's heads", true], ["every other head", false]].forEach(function (group) {
      var members = heads.filter(function (h) { return h.lead === group[1]; });
      if (!members.length) return;
      var optgroup = element("optgroup");
      optgroup.label = group[0];
      members.forEach(function (h) { option(optgroup, h.head, h.text); });
      select.appendChild(optgroup);
    });
    return select;
  }

  function promptSelect(prompts) {
    var select = element("select");
    select.setAttribute("aria-label", "prompt");
    prompts.forEach(function (p, i) {
      var text = p.text.length > 70 ? p.text.slice(0, 67) + "..." : p.text;
      option(select, String(i), "prompt " + i + ": " + text);
    });
    return select;
  }

  function grid(tokens, rows, readout) {
    var table = element("table", undefined, "hs-grid");
    var head = element("tr");
    head.appendChild(element("th", "dest \\ src", "hs-corner"));
    tokens.forEach(function (token) { head.appendChild(element("th", token, "hs-src")); });
    table.appendChild(head);
    tokens.forEach(function (token, d) {
      var weights = (rows[d] || "").split(" ").map(Number);
      var row = element("tr");
      row.appendChild(element("th", token, "hs-dest"));
      tokens.forEach(function (source, s) {
        var box = element("td", "", s <= d ? "hs-cell" : "hs-cell hs-future");
        if (s <= d) {
          var value = weights[s] || 0;
          var text = d + " " + token + " <- " + s + " " + source + ": " + value.toFixed(4);
          box.style.backgroundColor = colour(value);
          box.title = text;
          box.dataset.value = String(value);
          box.addEventListener("mouseenter", function () { readout.textContent = text; });
        }
        row.appendChild(box);
      });
      table.appendChild(row);
    });
    return table;
  }

  function mount(root) {
    var data = JSON.parse(document.getElementById(root.dataset.source).textContent);
    var controls = element("div", undefined, "hs-controls");
    var heads = headSelect(data.heads);
    var prompts = promptSelect(data.prompts);
    controls.appendChild(heads);
    controls.appendChild(prompts);
    var text = element("div", "", "hs-prompt-text");
    var readout = element("div", "hover a cell: destination <- source: attention", "hs-readout");
    var stage = element("div", undefined, "hs-stage");
    [controls, legend(), text, readout, stage].forEach(function (node) { root.appendChild(node); });

    function draw() {
      var prompt = data.prompts[Number(prompts.value)];
      var rows = prompt.patterns[heads.value];
      text.textContent = prompt.text;
      stage.replaceChildren();
      if (rows) stage.appendChild(grid(prompt.tokens, rows, readout));
    }
    heads.addEventListener("change", draw);
    prompts.addEventListener("change", draw);
    draw();
  }

  document.querySelectorAll(".hs-viewer").forEach(mount);
})();
