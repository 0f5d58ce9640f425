// gridprobe dashboard: the "run now" form of a site page. It posts {site, service?, probe?} to
// the on-demand run API with the bearer token typed in, shows the JSON answer as text (never as
// HTML), and follows an accepted run at GET /api/v1/runs/{id} until it has finished.
// Nothing else on the pages needs script.
(function () {
  "use strict";
  var form = document.getElementById("run-now");
  if (!form) return;
  var out = document.getElementById("run-answer");

  function show(status, text) {
    var shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
    out.textContent = "HTTP " + status + "\n" + shown;
  }

  function follow(url, headers, deadline) {
    fetch(url, { headers: headers, credentials: "same-origin" })
      .then(function (r) {
        return r.text().then(function (text) {
          show(r.status, text);
          var run = null;
          try { run = JSON.parse(text); } catch (e) { /* not JSON */ }
          if (r.ok && run && run.state === "running" && Date.now() < deadline) {
            setTimeout(function () { follow(url, headers, deadline); }, 1000);
          }
        });
      })
      .catch(function (e) { out.textContent += "\nfollowing the run failed: " + e; });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = { site: form.dataset.site };
    var service = form.elements.service.value;
    var probe = form.elements.probe.value;
    if (service) body.service = service;
    if (probe) body.probe = probe;
    var headers = { "Accept": "application/json" };
    var token = form.elements.token.value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    var post = Object.assign({ "Content-Type": "application/json" }, headers);
    out.textContent = "starting…";
    fetch(form.action, {
      method: "POST", headers: post, body: JSON.stringify(body), credentials: "same-origin"
    })
      .then(function (r) {
        return r.text().then(function (text) {
          show(r.status, text);
          var answer = null;
          try { answer = JSON.parse(text); } catch (e) { /* not JSON */ }
          if (r.status === 202 && answer && answer.id !== undefined) {
            var url = form.action.replace(/\/$/, "") + "/" + encodeURIComponent(answer.id);
            setTimeout(function () { follow(url, headers, Date.now() + 120000); }, 1000);
          }
        });
      })
      .catch(function (e) { out.textContent = "request failed: " + e; });
  });
})();

// The acknowledgement form of /notifications: posts {site, service?, metric?, comment,
// expires?, sticky} to POST /api/v1/acks with the bearer token typed in; the answer is shown
// as text.
(function () {
  "use strict";
  var form = document.getElementById("ack-form");
  if (!form) return;
  var out = document.getElementById("ack-result");
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var e = form.elements;
    var body = { site: e.site.value, comment: e.comment.value, sticky: e.sticky.checked };
    if (e.service.value) body.service = e.service.value;
    if (e.metric.value) body.metric = e.metric.value;
    if (e.expires.value) body.expires = e.expires.value;
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    var token = e.token.value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    fetch(form.dataset.api, {
      method: "POST", headers: headers, body: JSON.stringify(body), credentials: "same-origin"
    })
      .then(function (r) {
        return r.text().then(function (text) { out.textContent = "HTTP " + r.status + " " + text; });
      })
      .catch(function (err) { out.textContent = "failed: " + err; });
  });
})();
