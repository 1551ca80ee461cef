// PhotoSentry review page: reveal, keyboard shortcuts and the lease heartbeat.
// Loaded from /static (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const photo = document.getElementById("photo");
  const reveal = document.getElementById("reveal");

  function toggleReveal() {
    if (!photo) return;
    const concealed = photo.classList.toggle("concealed");
    if (reveal) {
      reveal.setAttribute("aria-pressed", String(!concealed));
      reveal.firstChild.textContent = concealed ? "Reveal photo " : "Hide photo ";
    }
  }
  if (reveal) reveal.addEventListener("click", toggleReveal);

  function submitWith(buttonId) {
    const button = document.getElementById(buttonId);
    if (button && button.form) button.form.requestSubmit(button);
  }

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    const typing = target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
    if (typing) {
      if (event.key === "Escape") target.blur();
      if (event.key === "Enter" && target.id === "reason") event.preventDefault();  // choose r or c
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    switch (event.key) {
      case "v": toggleReveal(); break;
      case "r": submitWith("release"); break;
      case "c": submitWith("confirm"); break;
      case "n": {
        const skip = document.getElementById("skip") || document.getElementById("next-form");
        if (skip) skip.requestSubmit();
        break;
      }
      default: return;
    }
    event.preventDefault();
  });

  // Keep the lease while the page is open; a closed tab lets it expire.
  const item = document.querySelector(".item[data-state='pending']");
  if (item) {
    const every = Math.max(5, Math.floor(Number(item.dataset.lease) / 4)) * 1000;
    setInterval(function () {
      fetch("/item/" + item.dataset.item + "/renew", {method: "POST", headers: {"X-CSRF-Token": csrf},
                                                       credentials: "same-origin"});
    }, every);
  }
})();
