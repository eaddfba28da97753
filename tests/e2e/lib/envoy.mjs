// Run a real Envoy with the mesh-oidc wasm filter in front of the echo service.

import * as fs from 'node:fs';
import * as path from 'node:path';

import { freePort, isListening } from './ports.mjs';
import { ENVOY_BIN, WASM_PATH, outDir as makeOutDir } from './paths.mjs';
import { spawnLogged, sleep } from './proc.mjs';
import { request } from './http.mjs';
import { toYaml } from './yaml.mjs';

/** Istio's cluster name for the in-mesh Keycloak service, as the filter derives it. */
export const KEYCLOAK_CLUSTER = 'outbound|8080||keycloak.keycloak.svc.cluster.local';
export const KEYCLOAK_INTERNAL_URL = 'http://keycloak.keycloak.svc.cluster.local:8080';

/** The `keycloak` block of the filter config for a provider on 127.0.0.1:providerPort. */
export function keycloakConfig(providerPort, realm = 'dev') {
  return { public_url: `http://127.0.0.1:${providerPort}`, internal_url: KEYCLOAK_INTERNAL_URL, realm };
}

let baseIdCounter = 0;

function staticCluster(name, port, extra = {}) {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }],
    },
    ...extra,
  };
}

/**
 * Build the bootstrap object.
 * @param {object} o
 * @param {object|null} o.filterConfig     JSON config of the filter; null = no wasm filter at all
 * @param {string} [o.filterConfigRaw]     the configuration string as is (for invalid JSON)
 */
export function bootstrap({
  adminPort, listenerPort, echoPort, providerPort, filterConfig, filterConfigRaw, wasmPath = WASM_PATH,
  extraClusters = [], accessLogPath, routeTimeout = '15s', maxRequestHeadersKb,
}) {
  const withFilter = filterConfig !== null || filterConfigRaw !== undefined;
  const httpFilters = [];
  if (withFilter) {
    httpFilters.push({
      name: 'envoy.filters.http.wasm',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm',
        config: {
          name: 'mesh-oidc',
          root_id: 'mesh-oidc',
          vm_config: {
            vm_id: 'mesh-oidc',
            runtime: 'envoy.wasm.runtime.v8',
            code: { local: { filename: wasmPath } },
          },
          configuration: {
            '@type': 'type.googleapis.com/google.protobuf.StringValue',
            value: filterConfigRaw ?? JSON.stringify(filterConfig),
          },
          fail_open: false,
        },
      },
    });
  }
  httpFilters.push({
    name: 'envoy.filters.http.router',
    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' },
  });

  const hcm = {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    stat_prefix: 'ingress_http',
    codec_type: 'AUTO',
    ...(maxRequestHeadersKb ? { max_request_headers_kb: maxRequestHeadersKb } : {}),
    route_config: {
      name: 'local_route',
      virtual_hosts: [{
        name: 'productpage',
        domains: ['*'],
        routes: [{ match: { prefix: '/' }, route: { cluster: 'echo', timeout: routeTimeout } }],
      }],
    },
    http_filters: httpFilters,
    ...(accessLogPath ? {
      access_log: [{
        name: 'envoy.access_loggers.file',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
          path: accessLogPath,
          log_format: {
            text_format_source: {
              inline_string: '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% up=%UPSTREAM_HOST% %DURATION%ms\n',
            },
          },
        },
      }],
    } : {}),
  };

  return {
    node: { id: 'mesh-oidc-e2e', cluster: 'mesh-oidc-e2e' },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: adminPort } } },
    static_resources: {
      listeners: [{
        name: 'main',
        address: { socket_address: { address: '127.0.0.1', port_value: listenerPort } },
        filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: hcm }] }],
      }],
      clusters: [
        staticCluster('echo', echoPort),
        staticCluster(KEYCLOAK_CLUSTER, providerPort),
        ...extraClusters.map((c) => (c.port !== undefined ? staticCluster(c.name, c.port, c.extra) : c)),
      ],
    },
  };
}

/**
 * Write the bootstrap into outDir, start Envoy, wait until its admin /ready says LIVE.
 * @returns {Promise<{exited: false, port, adminPort, url, pid, stop, log, logFile, outDir, stats} |
 *                   {exited: true, code, signal, log, logFile, outDir}>}
 */
export async function startEnvoy({
  filterConfig, filterConfigRaw, providerPort, echoPort, extraClusters, outDir, port, adminPort,
  wasmPath, logLevel = 'info', componentLogLevel, concurrency = 2, readyTimeoutMs = 30000,
  maxRequestHeadersKb,
} = {}) {
  const dir = outDir ?? makeOutDir(['envoy', `e-${process.pid}-${Date.now()}`]);
  const listenerPort = port ?? await freePort();
  const admin = adminPort ?? await freePort();
  baseIdCounter += 1;
  const baseId = ((process.pid % 2000) * 100 + baseIdCounter) % 4000000;
  const name = `envoy-${baseIdCounter}`;
  const yamlPath = path.join(dir, `${name}.yaml`);
  const logFile = path.join(dir, `${name}.log`);
  const accessLogPath = path.join(dir, `${name}-access.log`);
  const cfg = bootstrap({
    adminPort: admin,
    listenerPort,
    echoPort,
    providerPort,
    filterConfig: filterConfig === undefined ? null : filterConfig,
    filterConfigRaw,
    wasmPath,
    extraClusters,
    accessLogPath,
    maxRequestHeadersKb,
  });
  fs.writeFileSync(yamlPath, toYaml(cfg));

  const args = [
    '-c', yamlPath,
    '--concurrency', String(concurrency),
    '--log-level', logLevel,
    '--base-id', String(baseId),
    '--disable-hot-restart',
    '--log-format', '[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v',
  ];
  if (componentLogLevel) args.push('--component-log-level', componentLogLevel);
  const proc = spawnLogged(ENVOY_BIN, args, { logFile });
  const readLog = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');

  const deadline = Date.now() + readyTimeoutMs;
  let live = false;
  while (Date.now() < deadline && !proc.exitInfo) {
    try {
      const res = await request(`http://127.0.0.1:${admin}/ready`, { timeoutMs: 1000 });
      if (res.status === 200 && res.body.trim() === 'LIVE') { live = true; break; }
    } catch { /* not up yet */ }
    await Promise.race([sleep(100), proc.exited]);
  }
  if (proc.exitInfo) {
    return { exited: true, code: proc.exitInfo.code, signal: proc.exitInfo.signal, log: readLog, logText: readLog(), logFile, outDir: dir, yamlPath };
  }
  if (!live) {
    await proc.stop();
    throw new Error(`Envoy did not become ready within ${readyTimeoutMs} ms:\n${readLog().slice(-5000)}`);
  }

  const handle = {
    exited: false,
    port: listenerPort,
    adminPort: admin,
    url: `http://127.0.0.1:${listenerPort}`,
    pid: proc.pid,
    outDir: dir,
    yamlPath,
    logFile,
    accessLogFile: accessLogPath,
    log: readLog,
    accessLog: () => (fs.existsSync(accessLogPath) ? fs.readFileSync(accessLogPath, 'utf8') : ''),
    get alive() { return !proc.exitInfo; },
    get exitInfo() { return proc.exitInfo; },
    /** Is the listener accepting connections? */
    listening: () => isListening(listenerPort),
    /** Admin GET (e.g. "/stats?filter=wasm", "/clusters", "/listeners"). */
    admin: async (p) => (await request(`http://127.0.0.1:${admin}${p}`)).body,
    async stop() { await proc.stop(); },
  };
  return handle;
}

/** Lines of an Envoy log that show the wasm VM died or panicked. */
export function crashLines(logText) {
  return logText.split('\n').filter((l) => /panicked|wasm trap|Uncaught RuntimeError|RuntimeError: unreachable/i.test(l));
}
