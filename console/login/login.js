// The login page: trade an admin key for a session cookie, then open the
// console. The console's route (the URL fragment) survives the round trip.

const form = /** @type {HTMLFormElement} */ (document.getElementById("login"));
const input = /** @type {HTMLInputElement} */ (document.getElementById("key"));
const error = /** @type {HTMLElement} */ (document.getElementById("error"));
const submit = /** @type {HTMLButtonElement} */ (document.getElementById("submit"));

function showError(message) {
  error.textContent = message;
  error.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.select();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = input.value.trim();
  if (!key) {
    showError("Enter an admin key.");
    return;
  }
  submit.disabled = true;
  submit.textContent = "Signing in…";
  try {
    const response = await fetch("/admin/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key }),
      credentials: "same-origin",
    });
    if (response.ok) {
      input.value = "";
      window.location.replace("/" + window.location.hash);
      return;
    }
    const body = await response.json().catch(() => null);
    const message = body?.error?.message ?? `The controller answered ${response.status}.`;
    showError(response.status === 401 ? "That key is not one of this controller's." : message);
  } catch {
    showError("The controller cannot be reached.");
  } finally {
    submit.disabled = false;
    submit.textContent = "Sign in";
  }
});

input.addEventListener("input", () => {
  error.hidden = true;
  input.removeAttribute("aria-invalid");
});
