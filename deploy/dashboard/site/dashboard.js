// A single-page dashboard behind the proxy: it calls /api/ with the browser's
// session cookie; the proxy asks keystile, which adds the upstream key server-side.
"use strict";

async function getJSON(url, options) {
  const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) {
    // the session ended: sign in again, then come back here
    window.location.assign("/_keystile/login?rd=" + encodeURIComponent(location.pathname));
    throw new Error("signed out");
  }
  const body = await response.json();
  if (!response.ok) {
    throw new Error((body.error && body.error.message) || response.statusText);
  }
  return body;
}

async function load() {
  const who = document.getElementById("who");
  try {
    const me = await getJSON("/_keystile/whoami");
    who.textContent = "Signed in as " + me.user.name + " (" + me.user.role + ")";
  } catch (error) {
    who.textContent = "Not signed in";
  }
  const usage = document.getElementById("usage");
  try {
    usage.textContent = JSON.stringify(await getJSON("/api/usage"), null, 2);
    usage.dataset.state = "loaded";
  } catch (error) {
    usage.textContent = "Could not load: " + error.message;
    usage.dataset.state = "failed";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  load();
  document.getElementById("ask").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = document.getElementById("answer");
    try {
      const prompt = document.getElementById("prompt").value;
      const body = await getJSON("/api/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: prompt }),
      });
      answer.textContent = JSON.stringify(body, null, 2);
      answer.dataset.state = "loaded";
    } catch (error) {
      answer.textContent = "Failed: " + error.message;
      answer.dataset.state = "failed";
    }
  });
});
