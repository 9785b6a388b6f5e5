/* Draws every plotly figure of the page from the JSON <script> element named by data-source. */
(function () {
  "use strict";
  var config = { displaylogo: false, responsive: true };
  document.querySelectorAll(".hs-figure").forEach(function (div) {
    var spec = JSON.parse(document.getElementById(div.dataset.source).textContent);
    Plotly.newPlot(div, spec.data, spec.layout, config);
  });
})();
