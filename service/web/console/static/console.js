// The console's keyboard: j/k move through the list the page was opened from, o/n press the OK/NG review buttons
// (the note is sent with them). The inspections list remembers its order in sessionStorage; nothing leaves the browser.
(function () {
  "use strict";
  const KEY = "console-record-order";
  const links = Array.from(document.querySelectorAll("a.record-link"));
  if (links.length) {
    sessionStorage.setItem(KEY, JSON.stringify(links.map((a) => a.getAttribute("href"))));
  }
  const detail = document.querySelector("[data-record]");
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (detail && (event.key === "j" || event.key === "k")) {
      const order = JSON.parse(sessionStorage.getItem(KEY) || "[]");
      const here = order.indexOf(window.location.pathname);
      const next = order[here + (event.key === "j" ? 1 : -1)];
      if (here >= 0 && next) {
        window.location.assign(next);
      }
    } else if (event.key === "o" || event.key === "n") {
      const button = document.querySelector(`button[data-verdict="${event.key === "o" ? "ok" : "ng"}"]`);
      if (button) {
        button.click();
      }
    }
  });
})();
