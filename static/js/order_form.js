// New order: add and remove lines in the page. Without JavaScript the same buttons post the form
// and the server sends it back with a line more or less (orders/forms.py order_lines_edit).
(function () {
  "use strict";
  const form = document.querySelector("[data-order-form]");
  if (!form) return;
  const body = form.querySelector("[data-lines]");
  const template = form.querySelector("template[data-empty-line]");
  const total = form.querySelector("input[name='lines-TOTAL_FORMS']");
  const max = parseInt(form.querySelector("input[name='lines-MAX_NUM_FORMS']").value, 10);
  const add = form.querySelector("[data-add]");

  // Django's formset expects lines-0-..., lines-1-... with no gap, and TOTAL_FORMS to match.
  function renumber() {
    const rows = body.querySelectorAll("[data-line]");
    rows.forEach(function (row, index) {
      row.querySelectorAll("[name], [id], [for]").forEach(function (element) {
        ["name", "id", "for"].forEach(function (attribute) {
          const value = element.getAttribute(attribute);
          if (value) {
            element.setAttribute(attribute, value.replace(/lines-(\d+|__prefix__)-/, "lines-" + index + "-"));
          }
        });
      });
      const remove = row.querySelector("[data-remove]");
      remove.value = String(index);
      remove.hidden = rows.length === 1;
    });
    total.value = String(rows.length);
    add.disabled = rows.length >= max;
  }

  form.addEventListener("click", function (event) {
    if (event.target.closest("[data-add]")) {
      event.preventDefault();
      body.appendChild(template.content.cloneNode(true));
      renumber();
      body.lastElementChild.querySelector("select").focus();
    } else if (event.target.closest("[data-remove]")) {
      event.preventDefault();
      event.target.closest("[data-line]").remove();
      renumber();
      const first = body.querySelector("select");
      if (first) first.focus();
    }
  });
  renumber();
})();
