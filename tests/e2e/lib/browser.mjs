// Headless Chromium for the browser tests: Debian's /usr/bin/chromium (CHROMIUM_PATH to use
// another), driven with playwright-core. No browser is ever downloaded, and a missing Chromium is
// a failure, never a skip: apt-get install -y chromium chromium-driver
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic',
  // nothing but 127.0.0.1: every other host name fails to resolve
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  '--no-default-browser-check', '--disable-default-apps', '--disable-extensions', '--disable-breakpad',
  '--disable-domain-reliability', '--no-pings',
];

export const MISSING_CHROMIUM = `Chromium is not installed at ${CHROMIUM}. Install Debian's browser: `
  + 'apt-get install -y chromium chromium-driver (this test never downloads a browser and never skips).';

/**
 * A browser on a fresh profile (a new temporary directory): `{ context, page, close }`. `close`
 * stops it and removes the profile. Throws without Chromium.
 */
export async function launchChromium({ viewport = { width: 1000, height: 700 } } = {}) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(MISSING_CHROMIUM);
  const { chromium } = await import('playwright-core');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-oidc-chromium-'));
  const removeProfile = () => fs.rmSync(userDataDir, { recursive: true, force: true });
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport,
    });
  } catch (err) {
    removeProfile();
    throw err;
  }
  const page = context.pages()[0] ?? await context.newPage();
  return {
    context,
    page,
    async close() {
      await context.close().catch(() => {});
      removeProfile();
    },
  };
}
