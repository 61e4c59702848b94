// Opened with a function key (?code=...), the dashboard keeps it for the links and forms the reader follows:
// the key comes from this page's own address, never from the page, which carries none.
(function () {
  var code = new URLSearchParams(window.location.search).get("code");
  if (!code) { return; }
  document.querySelectorAll("a[href^='/']").forEach(function (link) {
    var target = new URL(link.getAttribute("href"), window.location.origin);
    target.searchParams.set("code", code);
    link.setAttribute("href", target.pathname + target.search);
  });
  document.querySelectorAll("form").forEach(function (form) {
    var field = document.createElement("input");
    field.type = "hidden";
    field.name = "code";
    field.value = code;
    form.appendChild(field);
  });
})();
