// <select data-autosubmit>: submit its form on change (the form's own button does it without JS).
document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
  select.addEventListener("change", function () { select.form.submit(); });
});
