/* Draws the plotly figures of the page from the JSON <script> element named by data-source:
   the visible ones at once, a hidden one when the reader picks its head. */
(function () {
  "use strict";
  var config = { displaylogo: false, responsive: true };

  function draw(div) {
    if (div.dataset.drawn) return;
    var spec = JSON.parse(document.getElementById(div.dataset.source).textContent);
    Plotly.newPlot(div, spec.data, spec.layout, config);
    div.dataset.drawn = "1";
  }

  function show(block, head) {
    block.querySelectorAll(".hs-choice").forEach(function (choice) {
      choice.hidden = choice.dataset.head !== head;
      if (!choice.hidden) choice.querySelectorAll(".hs-figure").forEach(draw);
    });
  }

  document.querySelectorAll(".hs-figure").forEach(function (div) {
    if (!div.closest("[hidden]")) draw(div);
  });
  document.querySelectorAll(".hs-pick").forEach(function (block) {
    var select = block.querySelector(".hs-pick-select");
    select.addEventListener("change", function () { show(block, select.value); });
  });
})();
