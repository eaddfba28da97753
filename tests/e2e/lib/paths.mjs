import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const TESTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const REPO_DIR = path.resolve(TESTS_DIR, '..');
export const OUT_DIR = path.join(TESTS_DIR, 'out');
export const PROVIDER_SCRIPT = path.join(TESTS_DIR, 'provider', 'keycloak.mjs');
export const ENVOY_BIN = process.env.ENVOY_BIN ?? path.join(REPO_DIR, '.venv', 'bin', 'envoy');
export const WASM_PATH = process.env.MESH_OIDC_WASM
  ?? path.join(REPO_DIR, 'target', 'wasm32-wasip1', 'release', 'mesh_oidc.wasm');

export const wasmExists = () => fs.existsSync(WASM_PATH);

/** A folder name from a test name. */
export function slug(name) {
  return String(name).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 80) || 'test';
}

/** tests/out/<parts...>, created (and emptied when `fresh`). */
export function outDir(parts, { fresh = true } = {}) {
  const dir = path.join(OUT_DIR, ...[].concat(parts).map(slug));
  if (fresh) fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
