// Start the Keycloak look-alike (tests/provider/keycloak.mjs) as a child process.

import * as fs from 'node:fs';
import * as path from 'node:path';

import { freePort } from './ports.mjs';
import { PROVIDER_SCRIPT, TESTS_DIR, outDir as makeOutDir } from './paths.mjs';
import { spawnLogged } from './proc.mjs';
import { generateKeys } from './keys.mjs';
import { request } from './http.mjs';

/**
 * @param {object} opts
 * @param {{jwks: {keys: object[]}}} [opts.keys]   from generateKeys(); generated when absent
 * @param {number} [opts.accessTokenTtl]           seconds (default 300)
 * @param {string[]} [opts.redirectUris]
 * @param {string[]} [opts.postLogoutRedirectUris]
 * @param {number} [opts.port]                     default: a free port
 * @param {string} [opts.outDir]                   logs, key file, config, state file
 * @param {object} [opts.config]                   more provider settings (see keycloak.mjs header)
 * @returns {Promise<{port, issuer, publicUrl, keys, pid, stop, restart, requests, clearRequests, log, control,
 *   adminLogout, sessions, outDir}>}
 */
export async function startProvider(opts = {}) {
  const dir = opts.outDir ?? makeOutDir(['provider', `p-${process.pid}-${Date.now()}`]);
  const port = opts.port ?? await freePort();
  const state = { opts: { ...opts, port }, proc: undefined, generation: 0, requests: [] };
  const logFile = path.join(dir, 'provider.log');

  async function launch() {
    state.generation += 1;
    const gen = state.generation;
    const o = state.opts;
    const keys = o.keys ?? generateKeys();
    o.keys = keys;
    const keysFile = path.join(dir, `keys-${gen}.json`);
    fs.writeFileSync(keysFile, JSON.stringify(keys.jwks));
    const config = {
      port,
      keysFile,
      stateFile: path.join(dir, 'provider-state.json'),
      exitWithParent: true,
      ...(o.accessTokenTtl !== undefined ? { accessTokenTtl: o.accessTokenTtl } : {}),
      ...(o.redirectUris ? { redirectUris: o.redirectUris } : {}),
      ...(o.postLogoutRedirectUris ? { postLogoutRedirectUris: o.postLogoutRedirectUris } : {}),
      ...(o.config ?? {}),
    };
    const configFile = path.join(dir, `provider-config-${gen}.json`);
    fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
    fs.appendFileSync(logFile, `\n===== provider start #${gen} on port ${port} (${new Date().toISOString()}) =====\n`);

    let readyInfo;
    let resolveReady;
    const ready = new Promise((r) => { resolveReady = r; });
    const proc = spawnLogged(process.execPath, [PROVIDER_SCRIPT, configFile], {
      logFile,
      cwd: TESTS_DIR,
      onStdoutLine(line) {
        if (line.startsWith('READY ')) {
          readyInfo = JSON.parse(line.slice(6));
          resolveReady(true);
        } else if (line.startsWith('REQ ')) {
          try { state.requests.push({ ...JSON.parse(line.slice(4)), t: Date.now(), generation: gen }); } catch { /* partial line */ }
        }
      },
    });
    state.proc = proc;
    let timer;
    const outcome = await Promise.race([
      ready,
      proc.exited.then(() => false),
      new Promise((r) => { timer = setTimeout(() => r('timeout'), 15000); }),
    ]);
    clearTimeout(timer);
    if (outcome !== true) {
      await proc.stop();
      throw new Error(`provider did not start (${outcome === 'timeout' ? 'timeout' : `exit ${JSON.stringify(proc.exitInfo)}`}):\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
    }
    return readyInfo;
  }

  const info = await launch();
  const handle = {
    port,
    issuer: info.issuer,
    publicUrl: info.publicUrl,
    outDir: dir,
    get keys() { return state.opts.keys; },
    get pid() { return state.proc?.pid; },
    /** Stop (SIGTERM by PID; sessions are saved to the state file). */
    async stop() { if (state.proc) await state.proc.stop(); },
    /** Stop, then start again on the same port with changed options (e.g. {keys: newKeys}). */
    async restart(newOpts = {}) {
      // Each step in the log with its time: a restart that hangs says where.
      fs.appendFileSync(logFile, `----- restart: stopping pid ${state.proc?.pid} (${new Date().toISOString()})\n`);
      await handle.stop();
      fs.appendFileSync(logFile, `----- restart: stopped ${JSON.stringify(state.proc?.exitInfo)} (${new Date().toISOString()})\n`);
      if (newOpts.resetState) fs.rmSync(path.join(dir, 'provider-state.json'), { force: true });
      const { resetState, ...rest } = newOpts;
      state.opts = { ...state.opts, ...rest, port };
      const again = await launch();
      handle.issuer = again.issuer;
      handle.publicUrl = again.publicUrl;
      return handle;
    },
    /** Every request the provider answered: {method, path, host, status, auth, grant, ms, t, generation}. */
    requests(filter) {
      const all = [...state.requests];
      if (!filter) return all;
      if (typeof filter === 'function') return all.filter(filter);
      return all.filter((r) => r.path.endsWith(filter));
    },
    clearRequests() { state.requests.length = 0; },
    /** Wait until `count` logged requests match (the log line can trail the response a little). */
    async waitForRequests(filter, { count = 1, timeoutMs = 3000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = handle.requests(filter);
        if (found.length >= count || Date.now() >= deadline) return found;
        await new Promise((r) => { setTimeout(r, 25); });
      }
    },
    log() { return fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''; },
    logFile,
    /** Inject delays / failures: {delayMs: {token: 3000}, failStatus: {certs: 500}}; {} resets. */
    async control(body) {
      const res = await request(`http://127.0.0.1:${port}/__control`, { method: 'POST', body });
      if (res.status !== 200) throw new Error(`control failed: ${res.status}`);
    },
    get alive() { return Boolean(state.proc && !state.proc.exitInfo); },
    /**
     * Keycloak's admin "Sign out" of every session of a user: logout tokens to the clients with a
     * backchannel_logout_uri, then the sessions end. Returns {sessions, backchannel: [{client, sid, ok, error}]}.
     */
    async adminLogout(username) {
      const res = await request(`http://127.0.0.1:${port}/__admin/logout`, { method: 'POST', body: { username } });
      if (res.status !== 200) throw new Error(`admin logout failed: ${res.status} ${res.body}`);
      return JSON.parse(res.body);
    },
    /** A user's live sessions: [{sid, clients: {clientId: {sid, grantId, refreshTokens: [...]}}}]. */
    async sessions(username) {
      const res = await request(`http://127.0.0.1:${port}/__admin/sessions?username=${encodeURIComponent(username)}`);
      if (res.status !== 200) throw new Error(`sessions failed: ${res.status} ${res.body}`);
      return JSON.parse(res.body);
    },
  };
  return handle;
}
