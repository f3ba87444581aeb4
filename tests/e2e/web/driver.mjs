// Drives airlock's approval page in real headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core, as a human would: a CDP virtual authenticator stands in for the human's
// passkey (user verification on). Used by tests/e2e/test_approvals_web.py.
//
//   node tests/e2e/web/driver.mjs '<json command>'
//
// Prints one JSON object per line: events while it works ({"event": "list-open"}), then
// {"event": "done", ...} or {"event": "error", "message": ...}. Commands:
//
//   {"cmd": "enroll", "link": URL, "credfile": PATH}
//       registers a passkey through an enrollment link; saves the credential (with its
//       private key: this file is "the human's passkey") to credfile.
//   {"cmd": "decide", "credfile": PATH, "decision": "approve"|"deny",
//    "list_url": URL, "match": TEXT | "approval_url": URL,
//    "batch": bool, "screenshot": PATH, "wait_s": N}
//       with list_url: opens the list, says "list-open", waits (no reload) for a pending
//       row containing `match`, follows its link; then reads the page, screenshots it,
//       ticks every other pending call of the agent when `batch`, and decides with the
//       passkey. Reports the page text, the result and the finish request it sent.
//   {"cmd": "confirm", "credfile": PATH, "url": URL, "decision": "confirm"|"reject"}
//       an enrolled approver opens a pending passkey's page (/enrollments/ID), reads it, and
//       confirms or rejects it with their passkey. Reports the page text and the result.
//   {"cmd": "attack", "approval_url": URL, "enroll_link": URL?}
//       the agent's browser: a context with no authenticator tries Approve, Deny and the
//       enrollment link. Reports what the page said.

import { chromium } from 'playwright-core';
import fs from 'node:fs';

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function withBrowser(fn) {
  const browser = await chromium.launch({
    executablePath: process.env.AIRLOCK_CHROMIUM || '/usr/bin/chromium',
    args: ARGS,
    headless: true,
  });
  try {
    return await fn(browser);
  } finally {
    await browser.close();
  }
}

// A page with a virtual platform authenticator (user verified), optionally holding a
// credential saved earlier.
async function pageWithPasskey(browser, credfile, load) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  if (load) {
    const saved = JSON.parse(fs.readFileSync(credfile, 'utf8'));
    for (const credential of saved.credentials) {
      await cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
    }
  }
  const save = async () => {
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    fs.writeFileSync(credfile, JSON.stringify({ credentials }), { mode: 0o600 });
    return credentials.length;
  };
  return { context, page, save };
}

async function waitResult(page, timeoutMs) {
  await page.waitForFunction(() => {
    const r = document.getElementById('result');
    return r && /\b(ok|error|warning)\b/.test(r.className);
  }, null, { timeout: timeoutMs, polling: 100 });
  return page.$eval('#result', (r) => ({ text: r.textContent, kind: r.className }));
}

async function enroll(cmd) {
  return withBrowser(async (browser) => {
    const { page, save } = await pageWithPasskey(browser, cmd.credfile, false);
    const resp = await page.goto(cmd.link);
    const status = resp ? resp.status() : 0;
    if (status !== 200) {
      return { status, text: await page.innerText('body') };
    }
    await page.click('#enroll');
    const result = await waitResult(page, 30000);
    const count = await save();
    return { status, url: page.url(), result, credentials: count };
  });
}

async function decide(cmd) {
  return withBrowser(async (browser) => {
    const { page, save } = await pageWithPasskey(browser, cmd.credfile, true);
    let navigations = 0;
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations += 1; });
    const out = {};
    if (cmd.list_url) {
      await page.goto(cmd.list_url);
      out.list_url = page.url();
      const before = navigations;
      emit({ event: 'list-open', url: page.url() });
      const row = page.locator('#pending tbody tr', { hasText: cmd.match });
      await row.first().waitFor({ timeout: (cmd.wait_s || 60) * 1000 });
      out.list_row = await row.first().innerText();
      out.list_reloaded = navigations !== before;
      await row.first().locator('a').first().click();
      await page.waitForSelector('#action');
    } else {
      await page.goto(cmd.approval_url);
    }
    out.url = page.url();
    out.text = await page.innerText('body');
    out.production_banner = await page.locator('#prod-banner').count() > 0;
    if (cmd.screenshot) await page.screenshot({ path: cmd.screenshot, fullPage: true });
    if (cmd.passkey_index !== undefined) {
      await page.selectOption('#passkey', { index: cmd.passkey_index });
    }
    if (cmd.batch && await page.locator('#batch-all').count()) {
      await page.check('#batch-all');
    }
    out.batch_count = await page.locator('.batch-item:checked').count();
    let finish = null;
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().endsWith('/api/decide/finish')) finish = r.postData();
    });
    await page.click(cmd.decision === 'deny' ? '#deny' : '#approve');
    out.result = await waitResult(page, 60000);
    out.finish_request = finish;
    await page.waitForFunction(
      () => !document.getElementById('status').classList.contains('pending'),
      null, { timeout: 10000 },
    ).catch(() => {});
    out.status_after = await page.innerText('#status');
    if (cmd.screenshot_after) await page.screenshot({ path: cmd.screenshot_after, fullPage: true });
    await save();
    return out;
  });
}

async function confirm(cmd) {
  return withBrowser(async (browser) => {
    const { page, save } = await pageWithPasskey(browser, cmd.credfile, true);
    const resp = await page.goto(cmd.url);
    const out = { status: resp ? resp.status() : 0 };
    out.text = await page.innerText('body');
    if (out.status !== 200) return out;
    await page.click(cmd.decision === 'reject' ? '#reject' : '#confirm');
    out.result = await waitResult(page, 60000);
    await save();
    return out;
  });
}

async function attack(cmd) {
  return withBrowser(async (browser) => {
    // The agent's own browser: WebAuthn works, but it holds no passkey of the approver's.
    const context = await browser.newContext();
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    if (cmd.own_authenticator) {
      // An authenticator of the agent's own: it holds none of the approver's passkeys.
      await cdp.send('WebAuthn.addVirtualAuthenticator', {
        options: {
          protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
          hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
        },
      });
    }
    const out = {};
    await page.goto(cmd.approval_url);
    out.text = await page.innerText('body');
    for (const which of ['approve', 'deny']) {
      if (await page.locator('#' + which).count() === 0) {
        out[which] = { text: 'no button', kind: 'none' };
        continue;
      }
      await page.evaluate(() => { const r = document.getElementById('result'); r.textContent = ''; r.className = ''; });
      await page.click('#' + which);
      out[which] = await waitResult(page, 150000);
    }
    out.status_after = await page.innerText('#status');
    if (cmd.enroll_link) {
      const resp = await page.goto(cmd.enroll_link);
      out.enroll_status = resp ? resp.status() : 0;
      if (out.enroll_status === 200) {
        await page.click('#enroll');
        out.enroll = await waitResult(page, 150000);
      } else {
        out.enroll = { text: await page.innerText('body'), kind: 'refused' };
      }
    }
    return out;
  });
}

const COMMANDS = { enroll, decide, confirm, attack };

const cmd = JSON.parse(process.argv[2] || '{}');
const run = COMMANDS[cmd.cmd];
if (!run) {
  emit({ event: 'error', message: 'unknown command ' + cmd.cmd });
  process.exit(2);
}
run(cmd).then(
  (result) => { emit({ event: 'done', ...result }); process.exit(0); },
  (err) => { emit({ event: 'error', message: String(err && err.stack || err) }); process.exit(1); },
);
