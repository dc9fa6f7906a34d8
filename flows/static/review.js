// Keyboard shortcuts for the review item page; every action is also a plain form button.
(function () {
  "use strict";
  var script = document.currentScript;
  var modalities = (script.dataset.modalities || "").split(",");
  var currentModality = script.dataset.currentModality;
  var reviewerInput = document.getElementById("reviewer-name");

  function syncReviewer() {
    if (!reviewerInput) return;
    var name = reviewerInput.value.trim();
    document.querySelectorAll("input.js-reviewer").forEach(function (el) { el.value = name; });
  }
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", syncReviewer);
  });

  var submitting = false;
  function submit(id) {
    var form = document.getElementById(id);
    if (!form || submitting) return false;
    var button = form.querySelector("button");
    if (button && button.disabled) return false;
    submitting = true;
    syncReviewer();
    form.submit();
    return true;
  }
  function follow(id) {
    var link = document.getElementById(id);
    if (link) window.location.href = link.href;
    return !!link;
  }
  var modalityKeys = { c: "CFP", f: "FFA", o: "OCT", t: "other" };

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.isContentEditable);
    if (typing) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form && target.form.id === "form-edit") {
        event.preventDefault();
        submit("form-edit");
      } else if (event.key === "Escape") {
        target.blur();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var key = event.key;
    var handled = true;
    if (key === "a") handled = submit("form-accept");
    else if (key === "x") handled = submit("form-reject-pair");
    else if (key === "r") handled = submit("form-reject-retinal");
    else if (key === "u" || key === "Backspace") handled = submit("form-undo");
    else if (key >= "1" && key <= "9") handled = submit("form-choose-" + key);
    else if (modalityKeys[key]) handled = submit("form-modality-" + modalityKeys[key]);
    else if (key === "m") {
      var next = modalities[(modalities.indexOf(currentModality) + 1) % modalities.length];
      handled = submit("form-modality-" + next);
    } else if (key === "e") {
      var box = document.getElementById("edit-box");
      if (box) { box.open = true; document.getElementById("caption-en").focus(); }
    } else if (key === "j" || key === "ArrowRight") handled = follow("link-next");
    else if (key === "k" || key === "ArrowLeft") handled = follow("link-prev");
    else if (key === "n") handled = follow("link-next-undecided");
    else handled = false;
    if (handled) event.preventDefault();
  });
})();
