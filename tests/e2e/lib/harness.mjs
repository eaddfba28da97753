// A harness per test file (and per test): output folders under tests/out/, processes that are
// always stopped, and the logs of every Envoy and provider printed when a test fails.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { outDir as makeOutDir, slug } from './paths.mjs';
import { startProvider } from './provider.mjs';
import { startEnvoy } from './envoy.mjs';
import { startEcho } from './echo.mjs';

const TAIL_LINES = Number(process.env.E2E_LOG_TAIL ?? 200);

function tail(text, n) {
  const lines = text.split('\n');
  return lines.length > n ? `... (${lines.length - n} earlier lines in the file)\n${lines.slice(-n).join('\n')}` : text;
}

export class Harness {
  /**
   * @param {string|string[]} name  folder under tests/out/
   * @param {Harness} [parent]      a suite harness whose processes are also shown on failure
   */
  constructor(name, parent) {
    this.name = [].concat(name);
    this.parent = parent;
    this.outDir = makeOutDir(this.name);
    this.envoys = [];
    this.providers = [];
    this.logs = []; // other processes' logs: {name, file}
    this.cleanups = [];
  }

  /** A child harness for one test: tests/out/<suite>/<test>/ */
  child(name) {
    return new Harness([...this.name, slug(name)], this);
  }

  defer(fn) { this.cleanups.push(fn); }

  /** Show this log file (of a process started by hand) too when a test fails. */
  addLog(name, file) { this.logs.push({ name, file }); }

  async startProvider(opts = {}) {
    // numbered before the first await, so that providers started in parallel get their own folder
    this.providerCount = (this.providerCount ?? 0) + 1;
    const dir = path.join(this.outDir, `provider-${this.providerCount}`);
    fs.mkdirSync(dir, { recursive: true });
    const p = await startProvider({ outDir: dir, ...opts });
    this.providers.push(p);
    this.defer(() => p.stop());
    return p;
  }

  async startEcho() {
    const e = await startEcho();
    this.defer(() => e.stop());
    return e;
  }

  /** Same options as startEnvoy(); a refused start ({exited: true}) is returned, not thrown. */
  async startEnvoy(opts = {}) {
    const e = await startEnvoy({ outDir: this.outDir, ...opts });
    this.envoys.push(e);
    if (!e.exited) this.defer(() => e.stop());
    return e;
  }

  /** Print the logs of everything this harness (and its parent) started. */
  dumpLogs(reason = '') {
    const out = [];
    const add = (h) => {
      for (const e of h.envoys) {
        // leave out Envoy's list of compiled-in extensions: long and never the point
        const text = e.log().split('\n').filter((l) => !/\[source\/server\/server\.cc:\d+\] {2,}\S+: /.test(l)).join('\n');
        const crash = text.split('\n').filter((l) => /wasm|critical|\[error\]|panicked/i.test(l));
        out.push(`----- Envoy log ${e.logFile} (${e.exited ? `exited code=${e.code}` : `pid ${e.pid}`}) -----`);
        out.push(tail(text, TAIL_LINES));
        if (crash.length) out.push(`----- wasm / error lines of ${path.basename(e.logFile)} (${crash.length}) -----\n${tail(crash.join('\n'), 80)}`);
      }
      for (const p of h.providers) {
        out.push(`----- provider log ${p.logFile} -----`);
        out.push(tail(p.log().split('\n').filter((l) => !l.startsWith('REQ ') || /"status":[45]/.test(l)).join('\n'), 60));
      }
      for (const l of h.logs) {
        out.push(`----- ${l.name} log ${l.file} -----`);
        out.push(tail(fs.existsSync(l.file) ? fs.readFileSync(l.file, 'utf8') : '(no file)', 60));
      }
    };
    add(this);
    if (this.parent) add(this.parent);
    if (out.length) {
      process.stderr.write(`\n===== logs for failed test ${this.name.join('/')} ${reason} =====\n${out.join('\n')}\n===== end of logs =====\n`);
    }
  }

  async cleanup() {
    const fns = this.cleanups.splice(0).reverse();
    for (const fn of fns) {
      try { await fn(); } catch (err) { process.stderr.write(`cleanup failed: ${err.message}\n`); }
    }
  }

  /**
   * node:test's test(), with a child harness: its processes are stopped after the test, and on
   * failure the logs of every Envoy and provider (the suite's too) go to stderr.
   */
  test(name, opts, fn) {
    if (typeof opts === 'function') { fn = opts; opts = {}; }
    return test(name, opts, async (t) => {
      const h = this.child(name);
      try {
        await fn(h, t);
      } catch (err) {
        h.dumpLogs(`(${err?.message?.split('\n')[0] ?? err})`);
        throw err;
      } finally {
        await h.cleanup();
      }
    });
  }
}

/** The harness of a test file: `const h = harness('validate')`. */
export function harness(name) {
  return new Harness(name);
}
