#!/usr/bin/env node
// docs/reliability.md from the last runs: the fuzz figures of docs/fuzzing.md (what `make fuzz`
// last reported) and the soak's result (tests/out/soak/result.json), with the soak's plot copied
// to docs/reliability-soak.png. `make soak` calls it after a full run; by hand:
//   node tests/soak/report.mjs [result.json] [plot.png]

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DOCS = path.join(REPO, 'docs');

const fmt = (v, d = 1) => (v === undefined || v === null || Number.isNaN(v) ? '–' : Number(v).toFixed(d));
const int = (v) => (v === undefined || v === null ? '–' : Number(v).toLocaleString('en-US'));

/** The lines of the first Markdown table under the heading `## title` of a file. */
function tableUnder(text, title) {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${title}`);
  if (start < 0) return [];
  const out = [];
  for (const l of lines.slice(start + 1)) {
    if (l.startsWith('## ')) break;
    if (l.startsWith('|')) out.push(l);
    else if (out.length) break;
  }
  return out;
}

const cells = (row) => row.split('|').slice(1, -1).map((c) => c.trim());

function fuzzSection() {
  const file = path.join(DOCS, 'fuzzing.md');
  if (!fs.existsSync(file)) return { text: '_docs/fuzzing.md is missing: run `make fuzz`._\n', total: undefined };
  const md = fs.readFileSync(file, 'utf8');
  const run = tableUnder(md, 'Last run');
  const crashes = tableUnder(md, 'Crashes found and fixed');
  const rows = run.slice(2).map(cells);
  const totalRow = rows.find((r) => /total/i.test(r[0]));
  const targets = rows.filter((r) => !/total/i.test(r[0]));
  const total = totalRow ? Number(totalRow[1].replace(/[^\d]/g, '')) : undefined;
  const notOk = targets.filter((r) => r[4] && !/^ok$/i.test(r[4]));
  const crashRows = crashes.slice(2).map(cells);
  const out = [];
  out.push(`\`make fuzz\` (12 cargo-fuzz targets, one at a time for \`FUZZ_SECONDS\` each; what each target checks is in`);
  out.push(`[fuzzing.md](fuzzing.md)). Its last run, as fuzzing.md records it: **${int(total)} executions** in all,`);
  out.push(`${notOk.length ? `**${notOk.length} target(s) not ok**` : 'every target ok, no open crash'}.`);
  out.push('');
  out.push('| target | executions | per second | result |');
  out.push('| --- | ---: | ---: | --- |');
  for (const r of targets) out.push(`| ${r[0]} | ${r[1]} | ${r[2]} | ${r[4] ?? ''} |`);
  if (totalRow) out.push(`| **total** | ${totalRow[1]} | | ${totalRow[4] ?? ''} |`);
  out.push('');
  out.push(`What fuzzing found, each fixed and kept as a unit test (${crashRows.length}; the inputs and the reasoning are in`);
  out.push('[fuzzing.md](fuzzing.md#crashes-found-and-fixed)):');
  out.push('');
  out.push('| target | what was wrong | unit test |');
  out.push('| --- | --- | --- |');
  for (const r of crashRows) out.push(`| ${r[0]} | ${r[2]} | ${r[4]} |`);
  return { text: `${out.join('\n')}\n`, total };
}

const FAULT_TEXT = {
  slow: 'the provider slow past `timeout_ms`',
  token500: '500s from the token endpoint',
  garbage: 'garbage bodies from the token and certs endpoints',
  down: 'the provider down',
  rotate: 'a key rotation (a new signing key first, the old one kept)',
  shrink: 'a key set that shrinks (the old key dropped)',
};

const OBS_TEXT = {
  '200user': '200 (the service saw the user)',
  '302auth': '302 to the provider\'s login',
  '302local': '302 back to the page',
  '302endsession': '302 to the end-session endpoint',
};
const obs = (o) => OBS_TEXT[o] ?? o;

function minutesTable(rows) {
  const out = [
    '| min | faults | requests | ok | redirect | refused | 5xx explained | unexpected | logins ok / not | refreshes ok / failed | p50 ms | p99 ms | max ms | RSS MiB | Envoy heap MiB | RSS − heap MiB | wasm warn / error | panics | VM restarts |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    out.push(`| ${r.minute} | ${r.faults.join(', ') || '–'} | ${r.requests} | ${r.ok} | ${r.redirect} | ${r.refused} | ${r.fault5xx} | ${r.unexpected} | ${r.loginsOk} / ${r.loginsFailed} | ${r.refreshesOk} / ${r.refreshesFailed} | ${fmt(r.p50, 0)} | ${fmt(r.p99, 0)} | ${fmt(r.maxMs, 0)} | ${fmt(r.rssMiB)} | ${fmt(r.heapMiB)} | ${fmt(r.nonHeapMiB)} | ${r.wasmWarn} / ${r.wasmError} | ${r.panics} | ${r.vmCreated + r.vmReloads} |`);
  }
  return out.join('\n');
}

function soakSection(res, pngName) {
  const s = res.settings;
  const m = res.memory;
  const t = res.totals;
  const out = [];
  out.push(`**${res.verdict}**${res.failures.length ? ` — ${res.failures.join('; ')}` : ''}: ${fmt(res.durationS / 60, 1)} minutes from ${res.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')},`);
  out.push(`${int(t.requests)} requests through Envoy, **${t.byOutcome.unexpected} unexpected answers**, ${res.log.panics} panics, ${res.log.vmCreatedDuring + res.log.vmReloads} VM restarts,`);
  out.push(`RSS ${fmt(m.firstQuarterMedianMiB)} → ${fmt(m.lastQuarterMedianMiB)} MiB over the second half (${m.growthMiB >= 0 ? '+' : ''}${fmt(m.growthMiB)} MiB, bound ${m.boundMiB} MiB).`);
  out.push('');
  out.push(`Module: \`${s.wasm}\` (${int(s.wasmBytes)} bytes${s.module ? `, ${s.module}` : ''}); Envoy ${s.envoyVersion ?? '?'} with \`--concurrency ${s.concurrency}\`;`);
  out.push(`${s.browsers} browsers, ${s.apiClients} API clients, at most ${s.rate} requests/s and ${int(s.maxRequests)} requests;`);
  out.push(`access tokens live ${s.tokenTtl} s, refresh tokens rotate; \`timeout_ms\` ${s.timeoutMs}, \`jwks_refresh_seconds\` ${s.jwksRefreshS}, \`clock_skew_seconds\` ${s.clockSkewS}.`);
  out.push(`${t.loginsOk} logins through the provider's form completed (${t.loginsFailed} did not, ${t.loginsFailedExplained} of them while a fault was on), the filter refreshed sessions ${int(t.refreshesOk)} times (${int(t.refreshesFailed)} refreshes failed: a failure while the provider was healthy would show as an unexpected 302 to the login); p50 ${fmt(t.p50, 0)} ms, p99 ${fmt(t.p99, 0)} ms over every request (the p99 is the faults: a request that waits for a provider that does not answer waits \`timeout_ms\`).`);
  out.push('');
  out.push(`![RSS and answers over time](${pngName})`);
  out.push('');
  out.push('### Per minute');
  out.push('');
  out.push('*ok*, *redirect*, *refused*: expected answers (2xx, 3xx, 4xx); *5xx explained*: a 5xx that a fault open at that time legitimately causes (below); *refreshes*: the filter\'s `refreshes_ok` / `refreshes_failed` counters; *RSS − heap*: VmRSS less Envoy\'s own heap (`server.memory_physical_size`), which holds V8 and the wasm VMs\' linear memory (Envoy\'s admin has no per-VM memory figure); *VM restarts*: `wasm.envoy.wasm.runtime.v8.created` and `vm_reload` growth after the start.');
  out.push('');
  out.push(minutesTable(res.minutes));
  out.push('');
  out.push('### Memory');
  out.push('');
  out.push(`The bound: the median VmRSS of the last eighth of the run (the last quarter of the second half) may exceed that of the eighth after the half-way mark by at most **${m.boundMiB} MiB**.`);
  out.push('The first half holds the start-up growth that is not a leak (V8 compiling the module, the wasm VMs\' linear memory growing to their working size, the verified-token cache and the shared-data sets filling, the allocators\' pools), so only the second half is judged, and medians of ~40 samples each keep one allocation burst out of it.');
  out.push(`A fixed size rather than a percentage, because what a leak adds grows with the requests served, not with the process size: ${int(m.requestsBetween)} requests ran between the two windows, so the bound catches a leak of ${fmt(m.detectableKiBPerRequest, 2)} KiB per request or more (a leaked pending request, a session or a token kept per request is several KiB), while allocator noise between two medians of a steady Envoy stays within a few MiB.`);
  out.push('');
  out.push(`This run: start ${fmt(m.startMiB)} MiB, peak ${fmt(m.peakMiB)} MiB, end ${fmt(m.endMiB)} MiB; second half ${fmt(m.firstQuarterMedianMiB)} → ${fmt(m.lastQuarterMedianMiB)} MiB, ${m.growthMiB >= 0 ? '+' : ''}${fmt(m.growthMiB, 2)} MiB (${fmt(m.growthPercent, 1)} %), least-squares slope over the second half ${fmt(m.slopeMiBPerMinute, 2)} MiB/min — ${m.ok ? 'within the bound' : '**over the bound**'}.`);
  out.push('');
  out.push('### Faults: when, and what each may cause');
  out.push('');
  out.push('| from s | to s | fault |');
  out.push('| ---: | ---: | --- |');
  for (const w of res.windows) out.push(`| ${fmt(w.start, 0)} | ${fmt(w.end, 0)} | ${w.kind}: ${w.what} |`);
  out.push('');
  out.push('Every answer is judged against the request it answers. Answers that are always expected: a page or API call with a session gets 200 with the user\'s identity at the service; a page without a session a 302 to the provider\'s login; a callback a 302 back to the page; a logout a 302 to the end-session endpoint; an expired, forged or garbage token 401 (400 for two different tokens at once), forged cookies at the login listener a 302 to the login or 401. A token signed by the provider\'s key gets 200 while it and its key live, 401 after. Anything else is unexpected unless a fault open during the request explains it:');
  out.push('');
  out.push('| request | provider unhealthy (slow, 500s, garbage, down, restarting) | token of a dropped key (until the filter\'s next key-set fetch succeeds) |');
  out.push('| --- | --- | --- |');
  const e = res.explains;
  const list = (xs) => (xs?.length ? xs.map(obs).join(', ') : '–');
  out.push(`| page, tab (session) | ${list(e.page.unhealthy)}: the refresh failed or its wait ran out | – |`);
  out.push(`| API call at the login listener | ${list(e['api-login'].unhealthy)} | – |`);
  out.push(`| callback | ${list(e.callback.unhealthy)} | – |`);
  out.push('| login through the provider\'s form | may not complete | – |');
  out.push('| logout, login start, bad tokens, forged cookies | nothing | – |');
  out.push('| token of the provider\'s key at the validate listener | nothing: the filter keeps its key set | 200 or 401 |');
  out.push('');
  out.push('A key rotation explains nothing: the provider publishes the new key before it signs with it, and the filter fetches the set again when a token names an unknown `kid` (at most once every 5 s) before deciding, so tokens of the new key must pass at once and sessions must refresh across it.');
  out.push('');
  out.push('**Found by the soak, and fixed.** An earlier 10-minute run had 10 unexpected answers, all right after the key rotation: valid tokens of the new key refused with `signing key not found` in a millisecond or two. Forged tokens with random `kid`s each trigger a fetch, so the 5 s refetch rate limit was nearly always running when the provider began signing with the new key, and a token naming an unknown `kid` within it was refused at once. Now such a token waits for the next fetch the rate limit allows (the wait then lasts up to 5 s plus `timeout_ms`), while a `kid` whose key an earlier fetch saw leave the set is still refused at once (`Refetch` in src/keystore.rs; engine tests `a_new_key_seen_just_after_a_fetch_waits_for_the_next_one`, `a_key_that_left_the_set_is_refused_at_once_within_the_rate_limit`, `a_flood_of_unknown_kids_holds_a_bounded_number_of_requests`). The price: a forged token with a random `kid` is refused after that wait rather than at once, which is why this run\'s p99 and max include waits of several seconds; a VM holding 1,024 requests already refuses unknown `kid`s at once.');
  out.push('');
  out.push('How often each explanation was used:');
  out.push('');
  out.push('| explained by | request | answer | count |');
  out.push('| --- | --- | --- | ---: |');
  for (const x of res.explained) out.push(`| ${x.by} | ${x.kind} | ${obs(x.obs)} | ${x.n} |`);
  out.push('');
  out.push('### Envoy\'s log');
  out.push('');
  out.push(`${res.log.panics} panic lines, ${res.log.wasmErrors} wasm errors, ${res.log.critical} critical lines, ${res.log.wasmWarnings} wasm warnings; VMs created after the start: ${res.log.vmCreatedDuring}, reloads: ${res.log.vmReloads}. The warnings, one of each kind:`);
  out.push('');
  for (const w of res.log.samples.wasmWarn.slice(0, 15)) {
    out.push(`    ${w.line.replace(/^.*?wasm log \S+ /, '').replace(/http:\/\/\S+\/protocol\/openid-connect\//g, '…/').slice(0, 200)}`);
  }
  out.push('');
  if (res.unexpected.length) {
    out.push('### Unexpected answers');
    out.push('');
    const reason = (u) => {
      const lines = (u.envoy ?? []).map((l) => (/mesh-oidc\[[^\]]*\]: (.*)$/.exec(l) ?? [])[1]).filter(Boolean);
      return lines.find((l) => !/^\d{3} \(/.test(l)) ?? lines[0] ?? '';
    };
    const groups = new Map();
    for (const u of res.unexpected) {
      const key = u.what === 'answer'
        ? `${u.kind} at the ${u.listener} listener | ${obs(u.obs)}${u.why ? ` (${u.why})` : ''} | ${(u.faults ?? []).join(', ') || 'none'} | ${reason(u).replace(/\|/g, '/')}`
        : `${u.what} | ${u.stage ?? ''} | – | ${String(u.why ?? '').replace(/\|/g, '/').slice(0, 120)}`;
      const g = groups.get(key) ?? { n: 0, first: u.t, last: u.t };
      g.n += 1;
      g.last = u.t;
      groups.set(key, g);
    }
    out.push('| what | answer | windows open | the filter\'s log line | count | from s | to s |');
    out.push('| --- | --- | --- | --- | ---: | ---: | ---: |');
    for (const [k, g] of groups) out.push(`| ${k} | ${g.n} | ${fmt(g.first, 1)} | ${fmt(g.last, 1)} |`);
    out.push('');
    const atRotation = res.unexpected.filter((u) => (u.faults ?? []).includes('rotation') && (u.envoy ?? []).some((l) => /signing key not found|signing keys are not available/.test(l)));
    if (atRotation.length) {
      out.push(`${atRotation.length} of them came right after the key rotation, refused with \`signing key not found\` in a millisecond or two: the filter fetches the key set for an unknown \`kid\` at most once every 5 s (\`REFETCH_MIN_INTERVAL_MS\`, src/keystore.rs), and a token whose \`kid\` it does not know, arriving less than 5 s after the last fetch, is refused at once instead of held until the next fetch is allowed (\`refetch_allowed\` is false, so src/validate.rs, src/login/refresh.rs and src/login/callback.rs answer the error rather than \`RefetchKeys\`). Every forged token with a random \`kid\` triggers a fetch, so under such traffic the 5 s are nearly always running when the provider starts signing with a new key. In login mode the same path fails a refresh whose answer names the new key: the provider has already spent the rotating refresh token, the session is cleared and the browser sent to log in.`);
      out.push('');
    }
    const ex = res.unexpected.find((u) => u.envoy?.length);
    if (ex) {
      out.push(`For example (x-request-id \`${ex.rid}\`, at ${fmt(ex.t, 1)} s), Envoy's log and access log:`);
      out.push('');
      for (const l of ex.envoy.slice(0, 6)) out.push(`    ${l.replace(/\[source[^\]]*\] wasm log \S+ \S+ /, '').slice(0, 220)}`);
      out.push('');
    }
  }
  out.push('Requests by kind and answer:');
  out.push('');
  out.push('| request | answers |');
  out.push('| --- | --- |');
  for (const [k, v] of Object.entries(t.byKind)) out.push(`| ${k} | ${Object.entries(v).sort((a, b) => b[1] - a[1]).map(([o, n]) => `${obs(o)} ×${n}`).join(', ')} |`);
  out.push('');
  out.push(`The filter's calls to the provider (through the fault proxy; *_garbage*: answered by the proxy, *_unreachable*: the provider was not listening or dropped the connection): ${Object.entries(t.providerCallsByFilter).sort().map(([k, v]) => `${k} ${v}`).join(', ')}.`);
  if (t.providerGrants?.refresh_token) {
    const granted = t.providerGrants.refresh_token['200'] ?? 0;
    const refused = Object.entries(t.providerGrants.refresh_token).filter(([c]) => c !== '200').reduce((a, [, n]) => a + n, 0);
    out.push(`The provider granted ${granted} refreshes and the filter counted ${t.refreshesOk} successful ones${granted === t.refreshesOk && !refused ? ': one grant per refresh, tabs of one session included, and no refresh token presented twice' : ''}.`);
  }
  if (t.providerGrants) {
    out.push(`Token requests the provider answered, by grant and status: ${Object.entries(t.providerGrants).map(([g, st]) => `${g} ${Object.entries(st).map(([c, n]) => `${c} ×${n}`).join(', ')}`).join('; ')} (a 400 to a refresh is a refresh token already spent — by a sibling request whose answer the filter then uses, or by a refresh the filter gave up on during a fault; when it costs a session it shows above as an unexpected 302).`);
  }
  return `${out.join('\n')}\n`;
}

export function writeReport({ resultFile = path.join(REPO, 'tests/out/soak/result.json'), pngFile = path.join(REPO, 'tests/out/soak/soak.png') } = {}) {
  const res = JSON.parse(fs.readFileSync(resultFile, 'utf8'));
  const pngName = 'reliability-soak.png';
  const written = [];
  if (fs.existsSync(pngFile)) {
    fs.copyFileSync(pngFile, path.join(DOCS, pngName));
    written.push(path.join(DOCS, pngName));
  }
  const fuzz = fuzzSection();
  const faultKinds = [...new Set(res.schedule.map((f) => f.kind))];
  const doc = `# Reliability

<!-- Generated by tests/soak/report.mjs from the last \`make soak\` (tests/out/soak/result.json) and
docs/fuzzing.md (the last \`make fuzz\`). Edit those, not this file. -->

mesh-oidc runs in every sidecar with \`FAIL_CLOSE\`: a panic in the VM, a leak or a wait that never
ends is an outage of every service behind it. Two runs stand for that, neither part of \`make test\`:

\`\`\`
make fuzz                      # every parser and decision that takes outside bytes (docs/fuzzing.md)
make soak                      # 10 minutes in a real Envoy against a provider that misbehaves
make soak SOAK_MINUTES=1       # the smoke run: the same, compressed (tests/out/soak/ only)
SOAK_SELF_CHECK=1 make soak SOAK_MINUTES=1   # the judge's own check: no fault explains anything, so it must fail
\`\`\`

## Fuzzing

${fuzz.text}
## Soak

\`make soak\` (tests/soak/soak.mjs) runs one real Envoy (\`--concurrency 2\`) with the built module on
a login-mode and a validate-mode listener in front of an echo service, the test provider
(tests/provider/keycloak.mjs, real oidc-provider: short-lived access tokens, rotating refresh
tokens that revoke their grant when reused), and between them a fault proxy
(tests/soak/faultproxy.mjs; the provider's own \`/__control\` delays and fails endpoints, but only
with well-formed error bodies, so garbage comes from the proxy). Every process it starts is stopped
by its PID; the load has a rate cap and a request cap, the run a time bound.

- **Browsers** (a cookie jar each): log in through the provider's real login form, browse pages,
  call APIs, open 3–4 tabs at once with one session (while its token expires: one refresh for all),
  pass the session's token to the validate listener as the page's service would, outlive the
  access token so the filter refreshes it, log out (end-session at the provider) and log in again.
- **API clients** at the validate listener: valid tokens (fresh and reused, in the header or the
  cookie), expired ones, forged ones (tampered payload, the real \`kid\` with another key, unknown
  \`kid\`s, ES256 of another key, \`alg: none\`, HS256 keyed with the public key, wrong issuer,
  wrong \`azp\`, not yet valid, a spliced signature, signed with the \`enc\` key), garbage (random
  text, broken JSON parts, a 9 KB token, the Basic scheme, an empty Bearer, two different tokens),
  tokens of the previous signing key; and forged cookies at the login listener.
- **Faults**, on a 10-minute schedule (compressed in shorter runs, repeated in longer ones):
  ${faultKinds.filter((k) => FAULT_TEXT[k]).map((k) => FAULT_TEXT[k]).join('; ')}.

It fails on any unexpected answer (a 5xx no open fault explains, a 200 without a valid token, a
valid token refused outside a key change, an answer later than one dispatched call, the
refetch interval and one key-set wait, a login that does not complete while the provider is healthy), any panic or VM restart in Envoy, or RSS growth beyond the bound below.
Everything of the run is in \`tests/out/soak/\`: \`result.json\`, \`minutes.md\`, \`requests.tsv\` (every
request with its x-request-id, which the filter's log lines carry), Envoy's and the provider's logs.

### Last run

${soakSection(res, pngName)}
## Fault classes covered

| class | how | what must hold |
| --- | --- | --- |
| provider slow past \`timeout_ms\` | provider delays every call of the filter by ${res.settings.slowMs / 1000} s (timeout ${res.settings.timeoutMs / 1000} s) | no answer takes longer than one call, the refetch interval and one key-set wait (${res.settings.maxAnswerMs ? `${res.settings.maxAnswerMs / 1000} s` : '2 × `timeout_ms` + 8 s'}); refreshes fail into a new login, callbacks into a 504 page; API tokens still validated from the kept key set |
| token endpoint 500 | provider \`failStatus\` | callbacks answer a 502 page, refreshes fail into a new login; nothing else changes |
| garbage bodies | fault proxy: HTML, truncated JSON, random bytes, wrong shapes, bodies over the filter's caps (1 MiB token answer, 256 KiB key set), all with status 200 | no panic; the key set is kept (valid tokens still pass), refreshes and callbacks fail cleanly |
| provider down ${fmt(res.windows.find((w) => w.kind === 'down') ? res.windows.find((w) => w.kind === 'down').end - res.windows.find((w) => w.kind === 'down').start : 20, 0)} s | the provider process stopped, then restarted keeping its sessions | as above, and the filter's key-set retries back off; sessions created before still refresh after it |
| key rotation | restart with a new signing key first, the old one still published | the new key is fetched on first sight (one fetch per 5 s at most); tokens of the old key still pass |
| key set shrinks | restart with the old key dropped | tokens of the dropped key are refused once the filter's next fetch succeeds |
| abuse | forged and garbage tokens and cookies all run long | always 401 / 400 / a redirect to log in; never a 200, never a 5xx |
| concurrency | tabs of one session at once over 2 workers, rotating refresh tokens | every tab served; a refresh token spent twice revokes the grant at the provider, which would show as a lost session (an unexpected 302 to the login) |
`;
  fs.writeFileSync(path.join(DOCS, 'reliability.md'), doc);
  written.push(path.join(DOCS, 'reliability.md'));
  return written;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const written = writeReport({
    ...(process.argv[2] ? { resultFile: path.resolve(process.argv[2]) } : {}),
    ...(process.argv[3] ? { pngFile: path.resolve(process.argv[3]) } : {}),
  });
  for (const f of written) process.stdout.write(`wrote ${path.relative(REPO, f)}\n`);
}
