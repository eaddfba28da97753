// Everything the e2e tests use, from one place.
export { freePort, isListening } from './ports.mjs';
export { request, rawRequest, requestWithJar, follow, CookieJar, parseSetCookies } from './http.mjs';
export {
  generateKeys, generateKeysAsync, generateKey, withKeys, publicJwk, publicPem, signToken, tamper, accessTokenClaims,
} from './keys.mjs';
export { startProvider } from './provider.mjs';
export { startEcho } from './echo.mjs';
export {
  startEnvoy, bootstrap, keycloakConfig, crashLines, KEYCLOAK_CLUSTER, KEYCLOAK_INTERNAL_URL,
} from './envoy.mjs';
export { harness, Harness } from './harness.mjs';
export {
  endpoints, decodeJwt, pkcePair, parseLoginForm, startAuthorization, submitLogin, exchangeCode,
  refreshTokens, loginWithPassword, ALICE, DEFAULT_CLIENT,
} from './oidc.mjs';
export { sleep, waitFor } from './proc.mjs';
export { WASM_PATH, ENVOY_BIN, OUT_DIR, wasmExists } from './paths.mjs';
export {
  PAGE_HEADERS, API_HEADERS, setCookie, setCookies, isCleared, startLogin, atProvider, fillLoginForm,
  cancelLoginForm, toCallback, loginThroughFilter,
} from './login.mjs';
