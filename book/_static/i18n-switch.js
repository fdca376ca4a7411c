// The language switch: a link on every page to the same page in the other edition.
// The English book is built into _build/html/, the Chinese one into _build/html/zh/
// (levers/i18n.py); the page's <html lang> says which edition this is.
(function () {
  "use strict";
  function addSwitch() {
    var root = document.documentElement.dataset.content_root;
    if (root === undefined) { return; }
    var base = new URL(root, window.location.href);
    var here = new URL(window.location.href);
    var page = here.pathname.slice(base.pathname.length) || "index.html";
    var chinese = document.documentElement.lang.toLowerCase().indexOf("zh") === 0;
    var target = new URL((chinese ? "../" : "zh/") + page, base);
    target.hash = here.hash;
    var link = document.createElement("a");
    link.className = "btn btn-sm i18n-switch";
    link.href = target.href;
    link.hreflang = chinese ? "en" : "zh-CN";
    link.lang = link.hreflang;
    link.textContent = chinese ? "English" : "中文";
    link.title = chinese ? "Read this page in English" : "阅读本页的中文版";
    var buttons = document.querySelector(".article-header-buttons");
    if (buttons) {
      buttons.insertBefore(link, buttons.firstChild);
    } else {
      document.body.insertBefore(link, document.body.firstChild);
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addSwitch);
  } else {
    addSwitch();
  }
})();
