'use strict';
// Bounded waits, without side effects: the compatibility suite (through harness.js) and the stand-alone
// scripts (image/broadcast-across.js) share them. Every wait is bounded.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolve with the promise's value, or reject after `ms` with a labelled error. */
function withTimeout(promise, ms, label = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}

/**
 * Wait until `what` is satisfied. `what` is a predicate (polled every 20 ms; its truthy
 * return value is returned) or a promise. Always bounded by `ms`.
 */
async function waitFor(what, ms = 5000, label = 'condition') {
  if (typeof what !== 'function') return withTimeout(what, ms, label);
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await what();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timeout after ${ms} ms waiting for ${label}`);
    await sleep(20);
  }
}

module.exports = { sleep, withTimeout, waitFor };
