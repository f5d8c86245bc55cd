// Job statuses, from runstream.db.status.Status: written by
// `python -m runstream.api.static_gen`. Change the enum and run it; never edit this file.
"use strict";

// Every status, by name: JOB_STATUS.COMPLETED is "completed".
const JOB_STATUS = Object.freeze({
  PENDING: "pending",
  RUNNING: "running",
  PAUSED: "paused",
  COMPLETED: "completed",
  FAILED: "failed",
  CANCELLED: "cancelled",
});
// The statuses a job ends in: nothing follows them.
const TERMINAL_STATUSES = Object.freeze(["completed", "failed", "cancelled"]);
