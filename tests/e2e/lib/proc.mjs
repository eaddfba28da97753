// Child processes for the tests: spawn with output to a log file, stop by PID.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';

/**
 * Spawn a program with stdout and stderr appended to `logFile`. `onStdoutLine` sees each stdout
 * line too. Returns {child, pid, exited: Promise<{code, signal}>, stop()}.
 */
export function spawnLogged(cmd, args, { logFile, env, cwd, onStdoutLine } = {}) {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', onStdoutLine ? 'pipe' : log, log],
    detached: false,
  });
  fs.closeSync(log);
  if (onStdoutLine) {
    let buf = '';
    child.stdout.on('data', (chunk) => {
      fs.appendFileSync(logFile, chunk);
      buf += chunk.toString('utf8');
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onStdoutLine(line);
      }
    });
  }
  let exitInfo;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => { exitInfo = { code, signal }; resolve(exitInfo); });
    child.on('error', (err) => { exitInfo = { code: -1, signal: null, error: err }; resolve(exitInfo); });
  });
  return {
    child,
    pid: child.pid,
    exited,
    get exitInfo() { return exitInfo; },
    /** SIGTERM by PID, then SIGKILL after `graceMs`; resolves when the process is gone. */
    async stop(graceMs = 5000) {
      if (exitInfo) return exitInfo;
      try { process.kill(child.pid, 'SIGTERM'); } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
      }, graceMs);
      const info = await exited;
      clearTimeout(timer);
      return info;
    },
  };
}

export const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes (then return the last value). */
export async function waitFor(fn, { timeoutMs = 10000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try { last = await fn(); } catch (err) { last = undefined; if (Date.now() >= deadline) throw err; }
    if (last) return last;
    if (Date.now() >= deadline) return last;
    await sleep(intervalMs);
  }
}
