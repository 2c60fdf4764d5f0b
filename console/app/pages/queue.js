// Queue & sessions: queue packages, watch and control the build sessions,
// and the jobs of one session with, for each job that is not running, why.
//
// Polled every 2 s while shown (common/live.js: backing off after a
// failure, resting while the browser tab is hidden): GET /admin/api/sessions and
// GET /admin/api/queue narrowed to the chosen session, state and text, at
// most SHOWN jobs (a @world session has thousands). Rows are kept by job id
// and updated in place, so an expanded row and the focus survive a poll.
// An expanded row asks GET /admin/api/jobs/{id} (why, builds) each poll.

import { get, post } from "../api.js";
import { ConfirmDialog, Toaster, ago, pagePoller, duration, el, setText } from "../ui.js";

const POLL_MS = 2000;
const SHOWN = 200;
const EXPANDED_KEPT = 20;
const SESSIONS_SHOWN = 20;
const STATES = ["blocked", "queued", "assigned", "building", "done", "failed", "cancelled"];
const FILTERS = [
  { id: "", label: "All" },
  { id: "blocked,queued", label: "Waiting" },
  { id: "assigned,building", label: "Running" },
  { id: "done", label: "Done" },
  { id: "failed,cancelled", label: "Failed" },
];
const WAITING = new Set(["blocked", "queued"]);
const RUNNING = new Set(["assigned", "building"]);
// What a session in each state may be told, and which of those ask first.
const CONTROLS = {
  running: ["pause", "stop"],
  paused: ["resume", "stop"],
  stopped: ["start", "reset"],
  complete: ["reset"],
};
const CONFIRM = {
  stop: (s) => ({
    title: `Stop ${s.name}?`,
    text: "Its running builds are cancelled and their jobs go back to the queue; nothing starts until you start it again.",
    confirm: "Stop",
  }),
  reset: (s) => ({
    title: `Reset ${s.name}?`,
    text: "Its failed and cancelled jobs are queued again with their attempts forgotten, and the session runs.",
    confirm: "Reset",
  }),
};

const jobPath = (id) => `/admin/api/jobs/${encodeURIComponent(id)}`;

function pill(state) {
  return el("span", { class: `pill job-${state}` }, state);
}

/** One job's row and its detail row (why it waits, its builds, its logs). */
class JobRow {
  constructor(page, job) {
    this.page = page;
    this.id = job.id;
    this.job = job;
    this.expanded = false;
    this.detailLoaded = null;

    this.cpv = el("span", { class: "job-cpv" });
    this.state = el("span", { class: "pill" });
    this.drone = el("td", {});
    this.attempts = el("td", { class: "num" });
    this.when = el("td", { class: "muted" });
    this.reason = el("td", { class: "job-reason" });
    this.toggle = el("button", {
      class: "btn btn-small btn-quiet",
      type: "button",
      "aria-expanded": "false",
      "aria-controls": `detail-${job.id}`,
      onclick: () => this.setExpanded(!this.expanded),
    });
    this.tr = el(
      "tr",
      { "data-job": job.id, class: "job-row" },
      el("td", {}, this.cpv, el("span", { class: "cell-sub mono" }, job.id)),
      el("td", {}, this.state),
      this.drone,
      this.attempts,
      this.when,
      this.reason,
      el("td", { class: "actions" }, this.toggle),
    );
    this.why = el("p", { class: "job-why" });
    this.links = el("div", { class: "job-links" });
    this.builds = el("div", { class: "job-builds" });
    this.detail = el(
      "tr",
      { class: "job-detail", id: `detail-${job.id}`, "data-detail": job.id, hidden: true },
      el("td", { colspan: "7" }, el("div", { class: "job-detail-body" }, this.why, this.links, this.builds)),
    );
  }

  update(job, now) {
    this.job = job;
    this.tr.dataset.state = job.state;
    setText(this.cpv, job.cpv);
    setText(this.state, job.state);
    this.state.className = `pill job-${job.state}`;
    setText(this.drone, job.drone || "–");
    setText(this.attempts, String(job.attempts));
    setText(
      this.when,
      job.finished_at
        ? `finished ${ago(job.finished_at, now)}`
        : job.started_at
          ? `started ${ago(job.started_at, now)}`
          : job.ready_at
            ? `ready ${ago(job.ready_at, now)}`
            : "",
    );
    setText(this.reason, job.reason || (job.failed_on.length ? `failed on ${job.failed_on.join(", ")}` : ""));
    this.reason.title = job.reason || "";
    setText(this.toggle, this.expanded ? "Hide" : WAITING.has(job.state) ? "Why?" : "Details");
    this.toggle.title = WAITING.has(job.state) ? "Why is this job not running?" : "Builds and logs of this job";
  }

  setExpanded(on) {
    this.expanded = on;
    this.toggle.setAttribute("aria-expanded", String(on));
    this.detail.hidden = !on;
    if (on) this.page.expanded.add(this.id);
    else this.page.expanded.delete(this.id);
    // Bounded: the oldest expansion folds when too many are open.
    while (this.page.expanded.size > EXPANDED_KEPT) {
      const oldest = this.page.expanded.values().next().value;
      this.page.expanded.delete(oldest);
      this.page.rows.get(oldest)?.setExpanded(false);
    }
    this.update(this.job, Date.now());
    if (on) this.loadDetail();
  }

  async loadDetail() {
    let answer;
    try {
      answer = await get(jobPath(this.id));
    } catch (error) {
      setText(this.why, `Could not load the job: ${error.message}`);
      this.why.className = "job-why job-why-error";
      return;
    }
    if (!this.expanded) return;
    const { job, builds } = answer;
    this.detailLoaded = job;
    const running = RUNNING.has(job.state);
    const why = running
      ? `Running on ${job.drone}${job.started_at ? ` since ${new Date(job.started_at).toLocaleTimeString()}` : ""}.`
      : job.why || (job.state === "done" ? "Built." : "No reason given.");
    setText(this.why, why);
    this.why.className = `job-why${WAITING.has(job.state) ? " job-why-waiting" : ""}`;
    this.why.dataset.why = job.why ?? "";
    const links = [];
    if (job.build_id || builds.length) {
      links.push(
        el("a", { class: "btn btn-small", href: `${jobPath(job.id)}/log`, target: "_blank", rel: "noopener" }, "Build log"),
      );
    }
    const drone = job.drone || builds[0]?.drone;
    if (drone) {
      const q = new URLSearchParams({ drone, source: `build/${job.id}` });
      links.push(el("a", { class: "btn btn-small", href: `#/logs?${q}` }, running ? "Live log" : "Drone log"));
    }
    const key = links.map((a) => a.getAttribute("href")).join(" ");
    if (this.links.dataset.key !== key) {
      this.links.dataset.key = key;
      this.links.replaceChildren(...links);
    }
    const rows = builds.map((b) =>
      el(
        "tr",
        {},
        el("td", { class: "mono" }, b.build_id),
        el("td", {}, b.drone || "–"),
        el("td", {}, pill(b.state)),
        el("td", { class: "num" }, duration(b.duration_s)),
        el("td", { class: "num" }, b.exit_code === null ? "–" : String(b.exit_code)),
        el("td", { class: "job-reason" }, b.reason || ""),
      ),
    );
    this.builds.replaceChildren(
      rows.length
        ? el(
            "table",
            { class: "builds-table", "aria-label": `Builds of ${job.cpv}` },
            el(
              "thead",
              {},
              el("tr", {}, ...["Build", "Drone", "Result", "Took", "Exit", "Reason"].map((t) => el("th", { scope: "col" }, t))),
            ),
            el("tbody", {}, ...rows),
          )
        : el("span", { class: "muted" }, "No build yet."),
    );
  }
}

export function create(ctx) {
  const toasts = new Toaster();
  const dialog = new ConfirmDialog();
  const problem = el("div", { class: "banner banner-error", role: "alert", hidden: true });
  const summary = el("p", { class: "page-sub" }, "Loading…");
  const live = el("span", { class: "live", "aria-live": "polite" });

  // -- queue form --
  const atoms = el("input", {
    id: "queue-atoms",
    class: "input",
    type: "text",
    placeholder: "app-misc/foo  dev-libs/bar  @world",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const sessionName = el("input", {
    id: "queue-session",
    class: "input",
    type: "text",
    placeholder: "current session",
    autocomplete: "off",
    maxlength: "128",
  });
  const queueButton = el("button", { class: "btn btn-primary", type: "submit" }, "Queue");
  const formError = el("p", { class: "form-error", role: "alert", hidden: true });
  const form = el(
    "form",
    { class: "queue-form panel", "aria-label": "Queue packages" },
    el("label", { class: "field field-grow", for: "queue-atoms" }, el("span", {}, "Packages"), atoms),
    el("label", { class: "field", for: "queue-session" }, el("span", {}, "Session (optional)"), sessionName),
    queueButton,
    formError,
  );

  // -- sessions --
  const sessionList = el("div", { class: "sessions", role: "list", "aria-label": "Sessions" });
  const noSessions = el(
    "div",
    { class: "empty", hidden: true },
    el("strong", {}, "No build session yet."),
    el("span", {}, "Queue packages above: they are resolved with their dependencies into a session."),
  );

  // -- jobs --
  const filterButtons = FILTERS.map((f) =>
    el("button", { class: "chip", type: "button", "data-filter": f.id, "aria-pressed": String(f.id === "") }, f.label),
  );
  const text = el("input", {
    id: "jobs-filter",
    class: "input",
    type: "search",
    placeholder: "Filter by package, job id or drone",
    "aria-label": "Filter jobs",
    autocomplete: "off",
  });
  const shownNote = el("span", { class: "muted jobs-count", "aria-live": "polite" });
  const jobsTitle = el("h2", { class: "section-title", id: "jobs-title" }, "Jobs");
  const jobsBody = el("tbody");
  const jobsTable = el(
    "table",
    { class: "table table-jobs", "aria-labelledby": "jobs-title" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ...["Package", "State", "Drone"].map((t) => el("th", { scope: "col" }, t)),
        el("th", { scope: "col", class: "num" }, "Attempts"),
        el("th", { scope: "col" }, "When"),
        el("th", { scope: "col" }, "Last reason"),
        el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Details")),
      ),
    ),
    jobsBody,
  );
  const noJobs = el("div", { class: "empty", hidden: true }, el("strong", {}, "No job matches."));
  const jobsPanel = el(
    "section",
    { class: "jobs", "aria-labelledby": "jobs-title", hidden: true },
    el(
      "div",
      { class: "jobs-head" },
      jobsTitle,
      el("div", { class: "chips", role: "group", "aria-label": "Job state" }, ...filterButtons),
      text,
      shownNote,
    ),
    el("div", { class: "panel" }, jobsTable, noJobs),
  );

  const section = el(
    "section",
    { class: "page queue-page", "aria-labelledby": "queue-title" },
    el(
      "header",
      { class: "page-head" },
      el("div", {}, el("h1", { id: "queue-title" }, "Queue & sessions"), summary),
      live,
    ),
    problem,
    form,
    el("h2", { class: "section-title" }, "Sessions"),
    sessionList,
    noSessions,
    jobsPanel,
    dialog.el,
    toasts.el,
  );

  const page = { rows: new Map(), expanded: new Set() };
  const sessionCards = new Map();
  let sessions = [];
  let selected = null; // session id
  let stateFilter = "";
  let textFilter = "";
  let active = false;

  // -- actions --

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const list = atoms.value.split(/\s+/).filter(Boolean);
    if (!list.length) {
      formError.textContent = "Enter at least one package atom.";
      formError.hidden = false;
      atoms.focus();
      return;
    }
    const body = { atoms: list };
    if (sessionName.value.trim()) body.session = sessionName.value.trim();
    queueButton.disabled = true;
    setText(queueButton, "Resolving…");
    formError.hidden = true;
    try {
      const answer = await post("/admin/api/queue", body);
      atoms.value = "";
      selected = answer.session.id;
      toasts.show(
        "ok",
        `${answer.jobs.length} job${answer.jobs.length === 1 ? "" : "s"} queued in ${answer.session.name}`,
        list.join(" "),
        { "data-action": "queue" },
      );
      refresh();
    } catch (error) {
      formError.textContent = error.message;
      formError.hidden = false;
      atoms.setAttribute("aria-invalid", "true");
    } finally {
      queueButton.disabled = false;
      setText(queueButton, "Queue");
    }
  });
  atoms.addEventListener("input", () => {
    formError.hidden = true;
    atoms.removeAttribute("aria-invalid");
  });

  async function control(session, action, button) {
    if (CONFIRM[action]) {
      const yes = await dialog.ask({ ...CONFIRM[action](session), returnTo: button });
      if (!yes) return;
    }
    button.disabled = true;
    try {
      const answer = await post("/admin/api/control", { action, session: session.id });
      toasts.show("ok", `${answer.session.name}: ${action}`, `now ${answer.session.state}`, {
        "data-action": action,
      });
      refresh();
    } catch (error) {
      toasts.show("error", `${session.name}: ${action} failed`, error.message, { "data-action": action });
    } finally {
      button.disabled = false;
    }
  }

  for (const button of filterButtons) {
    button.addEventListener("click", () => {
      stateFilter = button.dataset.filter;
      for (const b of filterButtons) b.setAttribute("aria-pressed", String(b === button));
      refresh();
    });
  }
  let typing = null;
  text.addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => {
      textFilter = text.value.trim();
      refresh();
    }, 250);
  });

  // -- rendering --

  function sessionCard(s) {
    let card = sessionCards.get(s.id);
    if (!card) {
      const parts = {
        name: el("strong", { class: "session-name" }),
        state: el("span", { class: "pill" }),
        fill: el("span", { class: "progress-fill" }),
        figures: el("span", { class: "session-figures" }),
        counts: el("span", { class: "session-counts" }),
        meta: el("span", { class: "cell-sub" }),
        controls: el("span", { class: "session-controls" }),
      };
      const pick = el(
        "button",
        { class: "session-pick", type: "button", "aria-pressed": "false" },
        el("span", { class: "session-line" }, parts.name, parts.state),
        el("span", { class: "progress", role: "presentation" }, parts.fill),
        el("span", { class: "session-line" }, parts.figures, parts.counts),
        parts.meta,
      );
      pick.addEventListener("click", () => {
        selected = s.id;
        refresh();
      });
      const node = el("div", { class: "session", role: "listitem", "data-session": s.id }, pick, parts.controls);
      card = { node, pick, parts, actions: "" };
      sessionCards.set(s.id, card);
    }
    const { parts } = card;
    card.node.dataset.state = s.state;
    setText(parts.name, s.name);
    setText(parts.state, s.state);
    parts.state.className = `pill session-${s.state}`;
    parts.fill.style.width = `${Math.round(s.progress * 100)}%`;
    setText(parts.figures, `${s.jobs.done} of ${s.total} done (${Math.round(s.progress * 100)}%)`);
    const counts = STATES.filter((st) => st !== "done" && s.jobs[st]).map((st) => `${s.jobs[st]} ${st}`);
    setText(parts.counts, counts.join(" · "));
    setText(
      parts.meta,
      `${s.atoms.slice(0, 4).join(" ")}${s.atoms.length > 4 ? ` +${s.atoms.length - 4}` : ""} · by ${s.created_by || "?"} · ` +
        `${s.finished_at ? `finished ${ago(s.finished_at)}` : `created ${ago(s.created_at)}`}`,
    );
    const isSelected = s.id === selected;
    card.pick.setAttribute("aria-pressed", String(isSelected));
    card.node.classList.toggle("session-selected", isSelected);
    const actions = (CONTROLS[s.state] ?? []).concat(
      s.state !== "complete" && s.state !== "stopped" && (s.jobs.failed || s.jobs.cancelled) ? ["reset"] : [],
    );
    const key = actions.join(",");
    if (card.actions !== key) {
      card.actions = key;
      parts.controls.replaceChildren(
        ...actions.map((action) => {
          const button = el(
            "button",
            { class: `btn btn-small${CONFIRM[action] ? " btn-danger" : ""}`, type: "button", "data-control": action },
            action[0].toUpperCase() + action.slice(1),
          );
          button.addEventListener("click", () => control(sessions.find((x) => x.id === s.id) ?? s, action, button));
          return button;
        }),
      );
    }
    return card.node;
  }

  function renderSessions() {
    const shown = sessions.slice(0, SESSIONS_SHOWN);
    if (!shown.some((s) => s.id === selected)) {
      selected = (shown.find((s) => s.state !== "complete") ?? shown[0])?.id ?? null;
    }
    const nodes = shown.map(sessionCard);
    nodes.forEach((node, i) => {
      if (sessionList.children[i] !== node) sessionList.insertBefore(node, sessionList.children[i] ?? null);
    });
    while (sessionList.children.length > nodes.length) sessionList.lastElementChild.remove();
    for (const id of sessionCards.keys()) if (!shown.some((s) => s.id === id)) sessionCards.delete(id);
    noSessions.hidden = shown.length > 0;
    sessionList.hidden = shown.length === 0;
    const running = sessions.filter((s) => s.state === "running").length;
    summary.textContent = sessions.length
      ? `${sessions.length} session${sessions.length === 1 ? "" : "s"} · ${running} running`
      : "Nothing queued";
  }

  function renderJobs(jobs, total) {
    const now = Date.now();
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      seen.add(job.id);
      let row = page.rows.get(job.id);
      if (!row) {
        row = new JobRow(page, job);
        page.rows.set(job.id, row);
      }
      row.update(job, now);
      for (const tr of [row.tr, row.detail]) {
        const want = previous ? previous.nextSibling : jobsBody.firstChild;
        if (want !== tr) jobsBody.insertBefore(tr, want);
        previous = tr;
      }
      if (row.expanded) row.loadDetail();
    }
    for (const [id, row] of page.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        row.detail.remove();
        page.rows.delete(id);
        page.expanded.delete(id);
      }
    }
    noJobs.hidden = jobs.length > 0;
    jobsTable.hidden = jobs.length === 0;
    setText(
      shownNote,
      total > jobs.length ? `first ${jobs.length} of ${total} · narrow with the filters` : `${total} job${total === 1 ? "" : "s"}`,
    );
  }

  async function poll() {
    const answer = await get("/admin/api/sessions");
    sessions = answer.sessions;
    renderSessions();
    const session = sessions.find((s) => s.id === selected);
    jobsPanel.hidden = !session;
    if (!session) {
      renderJobs([], 0);
      return;
    }
    setText(jobsTitle, `Jobs of ${session.name}`);
    const query = new URLSearchParams({ session: session.id, limit: String(SHOWN) });
    if (stateFilter) query.set("state", stateFilter);
    if (textFilter) query.set("q", textFilter);
    const { jobs, total } = await get(`/admin/api/queue?${query}`);
    // A filter changed while this answer travelled: the next round shows the right one.
    if (session.id === selected) renderJobs(jobs, total);
  }

  const poller = pagePoller(poll, { every: POLL_MS, what: "the queue", live, problem });

  /** Poll now (after an action or a filter change) and go on every POLL_MS from there. */
  function refresh() {
    poller.now();
  }

  /** #/queue?job=ID: that job's session, the job alone, expanded. */
  async function focusJob(id) {
    try {
      const { job } = await get(jobPath(id));
      selected = job.session_id;
      text.value = job.id;
      textFilter = job.id;
      page.expanded.add(job.id);
      refresh();
      // The row exists after the next poll: expand it then.
      const wait = () => {
        const row = page.rows.get(job.id);
        if (row) {
          if (!row.expanded) row.setExpanded(true);
          row.toggle.focus();
        } else if (active) window.setTimeout(wait, 100);
      };
      wait();
    } catch (error) {
      toasts.show("error", `No job ${id}`, error.message);
    }
  }

  return {
    el: section,
    show(params = {}) {
      if (!active) {
        active = true;
        poller.start();
      }
      if (params.job) {
        ctx.settle("queue");
        focusJob(params.job);
      }
    },
    hide() {
      active = false;
      poller.stop();
      window.clearTimeout(typing);
      dialog.close();
    },
  };
}
