// Pastiche's dashboard: refreshes the page's live part every two seconds (the
// server renders it; this only swaps it in) until its job has ended, and sends
// a cancel with the farm's token when the farm has one.
"use strict";

const live = document.getElementById("live");
const EVERY_MS = 2000;

// Swaps in the live part as the server renders it now.
async function update() {
  try {
    const reply = await fetch(live.dataset.src, { cache: "no-store" });
    if (reply.ok) {
      live.innerHTML = await reply.text();
    }
  } catch (_) {
    // The coordinator is restarting or unreachable: the next refresh tries again.
  }
}

async function refresh() {
  await update();
  schedule();
}

function schedule() {
  if (!live.querySelector("[data-ended]")) {
    setTimeout(refresh, EVERY_MS);
  }
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.cancel");
  if (!form) {
    return;
  }
  event.preventDefault();
  // Sent by this script only: another site's form cannot cancel a job.
  const headers = { "X-Pastiche-Cancel": "1" };
  if (form.dataset.token === "required") {
    const token = window.prompt("The farm's token, to cancel the job:");
    if (!token) {
      return;
    }
    headers["Authorization"] = "Bearer " + token.trim();
  }
  const reply = await fetch(form.action, { method: "POST", headers });
  if (!reply.ok) {
    window.alert(await reply.text());
  }
  update(); // the refreshes already scheduled go on
});

schedule();
