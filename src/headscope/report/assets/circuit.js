/* headscope circuit diagram: layers as rows (embedding at the bottom, logits on top), heads and
   MLPs as nodes, edges as curves whose width is the edge's strength and colour its sign; the
   values of an edge on hover. Inline SVG built with createElementNS and textContent only. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 760, ROW = 78, MARGIN = 70, RADIUS = 14, INPUT_SHIFT = { q: -8, k: 0, v: 8 };

  function node(tag, attributes, text) {
    var item = document.createElementNS(SVG, tag);
    Object.keys(attributes).forEach(function (key) { item.setAttribute(key, attributes[key]); });
    if (text !== undefined) item.textContent = text;
    return item;
  }

  function layout(data) {
    var rows = data.n_layers + 2, height = rows * ROW;
    var columns = data.n_heads + 1, step = (WIDTH - 2 * MARGIN) / columns;
    function y(layer) { return height - ROW / 2 - (layer + 1) * ROW; }  // embed: layer -1
    function x(column) { return MARGIN + (column + 0.5) * step; }
    return { height: height, x: x, y: y, centre: WIDTH / 2, columns: columns };
  }

  function sourcePoint(edge, at) {
    var name = edge.source, layer = edge.source_layer;
    if (name === "embed") return [at.centre, at.y(-1) - RADIUS];
    var column = name.indexOf("mlp") === 0 ? at.columns - 1 : Number(name.split(".")[1]);
    return [at.x(column), at.y(layer) - RADIUS];
  }

  function targetPoint(edge, at, group) {
    var layer = edge.target_layer, kind = edge.input;
    if (kind === "logits") return [at.centre, at.y(layer) + RADIUS];
    if (kind === "mlp") return [at.x(at.columns - 1), at.y(layer) + RADIUS];
    var index = Number(edge.target.split(".")[1]);
    var x = kind === "q" ? at.x(index) : (at.x(index * group) + at.x((index + 1) * group - 1)) / 2;
    return [x + INPUT_SHIFT[kind], at.y(layer) + RADIUS];
  }

  function strength(edge) { return edge.exact !== null ? edge.exact : edge.score; }

  function describe(edge, method, approximation) {
    var text = edge.source + " \u2192 " + edge.target + " (" + edge.input + "): " + method + " " +
      edge.score.toFixed(4) + (approximation ? " (approximation)" : "") + ", exact " +
      (edge.exact !== null ? edge.exact.toFixed(4) : "not patched");
    return text + (edge.in_circuit ? "; in the circuit" : "");
  }

  function drawNodes(svg, data, at) {
    function circle(x, y, label) {
      var wide = label.length > 5 ? 12 : 0;  // embed, logits
      svg.appendChild(node("ellipse", { cx: x, cy: y, rx: RADIUS + wide, ry: RADIUS, class: "hs-node" }));
      svg.appendChild(node("text", { x: x, y: y + 4, "text-anchor": "middle", class: "hs-node-label" }, label));
    }
    circle(at.centre, at.y(-1), "embed");
    for (var layer = 0; layer < data.n_layers; layer++) {
      svg.appendChild(node("text", { x: 8, y: at.y(layer) + 4, class: "hs-row-label" }, "layer " + layer));
      for (var head = 0; head < data.n_heads; head++) circle(at.x(head), at.y(layer), layer + "." + head);
      circle(at.x(at.columns - 1), at.y(layer), "mlp" + layer);
    }
    circle(at.centre, at.y(data.n_layers), "logits");
  }

  function drawEdges(svg, data, at, readout) {
    var largest = Math.max.apply(null, data.edges.map(function (e) { return Math.abs(strength(e)); }).concat([1e-12]));
    data.edges.slice().reverse().forEach(function (edge) {  // the strongest drawn last, on top
      var from = sourcePoint(edge, at), to = targetPoint(edge, at, data.group_size);
      var bend = (from[1] - to[1]) / 2;
      var path = "M" + from[0] + "," + from[1] + " C" + from[0] + "," + (from[1] - bend) + " " +
        to[0] + "," + (to[1] + bend) + " " + to[0] + "," + to[1];
      var value = strength(edge);
      var line = node("path", {
        d: path, fill: "none", class: "hs-edge",
        stroke: value < 0 ? "#b2182b" : "#2166ac",
        "stroke-width": (1 + 7 * Math.abs(value) / largest).toFixed(2),
        "stroke-opacity": edge.in_circuit ? 0.85 : 0.25,
        "stroke-dasharray": edge.exact === null ? "5,4" : "none",
        "data-edge": edge.source + ">" + edge.target + ":" + edge.input,
      });
      var text = describe(edge, data.method, data.approximation);
      line.appendChild(node("title", {}, text));
      line.addEventListener("mouseenter", function () { readout.textContent = text; line.classList.add("hs-hover"); });
      line.addEventListener("mouseleave", function () { line.classList.remove("hs-hover"); });
      svg.appendChild(line);
    });
  }

  function build(box) {
    var data = JSON.parse(document.getElementById(box.dataset.source).textContent);
    var at = layout(data);
    var readout = document.createElement("div");
    readout.className = "hs-readout";
    readout.textContent = "hover an edge";
    var svg = node("svg", { width: WIDTH, height: at.height, viewBox: "0 0 " + WIDTH + " " + at.height });
    drawEdges(svg, data, at, readout);
    drawNodes(svg, data, at);
    box.appendChild(readout);
    box.appendChild(svg);
  }

  document.querySelectorAll(".hs-circuit").forEach(build);
})();
