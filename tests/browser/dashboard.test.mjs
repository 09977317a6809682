// Browser tests of the admin dashboard (GET /admin), run with `node --test` against a running
// node: Debian's Chromium driven by playwright-core (which downloads no browser).
//
// Environment:
//   STOREFRONT_URL              the node, e.g. http://127.0.0.1:18090 (required)
//   STOREFRONT_ADMIN_EMAIL      an admin account on it (required)
//   STOREFRONT_ADMIN_PASSWORD   its password (required)
//   CHROMIUM                    the browser (default /usr/bin/chromium)
//   SCREENSHOTS_DIR             when set, PNG screenshots of the main views are saved there
//
// Every run uses SKUs and emails of its own, so the tests can run against the same node again.
// Nothing here sleeps: every wait is Playwright polling for a condition, with a timeout.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.STOREFRONT_URL || '').replace(/\/+$/, '');
const ADMIN_EMAIL = process.env.STOREFRONT_ADMIN_EMAIL || '';
const ADMIN_PASSWORD = process.env.STOREFRONT_ADMIN_PASSWORD || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS_DIR = process.env.SCREENSHOTS_DIR || '';
if (!BASE || !ADMIN_EMAIL || !ADMIN_PASSWORD) {
  throw new Error('set STOREFRONT_URL, STOREFRONT_ADMIN_EMAIL and STOREFRONT_ADMIN_PASSWORD');
}

/** How long any one condition may take to come true. */
const WAIT_MS = 20_000;
const VIEWPORT = { width: 1440, height: 900 };
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`.toUpperCase();
const SKU = `BT-${RUN}-A`;
const OTHER_SKU = `BT-${RUN}-B`;
const FORM_SKU = `BT-${RUN}-C`;

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  if (SCREENSHOTS_DIR) await mkdir(SCREENSHOTS_DIR, { recursive: true });
});

after(async () => {
  await browser?.close();
});

// ------------------------------------------------------------------ the API, from Node

async function call(method, url, { token, body, key } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  if (key) headers['idempotency-key'] = key;
  const res = await fetch(BASE + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: res.status, body: json, text };
}

/** The answer's body, after checking its status is one of `statuses`. */
async function expectStatus(statuses, method, url, options) {
  const answer = await call(method, url, options);
  const wanted = [].concat(statuses);
  assert.ok(wanted.includes(answer.status), `${method} ${url}: ${answer.status} ${answer.text}`);
  return answer.body;
}

async function login(email, password) {
  return expectStatus(200, 'POST', '/v1/auth/login', { body: { email, password } });
}

async function baseCurrency() {
  return (await expectStatus(200, 'GET', '/v1/currencies')).base;
}

async function newCustomer(tag) {
  const email = `bt-${RUN.toLowerCase()}-${tag}@example.com`;
  const password = 'browser-test-password';
  await expectStatus(201, 'POST', '/v1/auth/register', { body: { email, password } });
  return { email, password, token: (await login(email, password)).access_token };
}

// ------------------------------------------------------------------ the page

async function openDashboard(options = {}) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy|Uncaught/i.test(msg.text())) errors.push(msg.text());
  });
  if (options.beforeLoad) await options.beforeLoad(page);
  await page.goto(`${BASE}/admin`);
  return { context, page, errors };
}

async function logInThroughForm(page, email, password) {
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
}

const stockRow = (sku) => `[data-testid=stock-row][data-sku="${sku}"]`;
const availableOf = (sku) => `${stockRow(sku)} [data-testid=available]`;

/** Waits until the element at `selector` has exactly `expected` as its text. */
async function waitForText(page, selector, expected, what) {
  try {
    await page.waitForFunction(
      ([sel, want]) => document.querySelector(sel)?.textContent.trim() === want,
      [selector, String(expected)],
      { timeout: WAIT_MS, polling: 100 },
    );
  } catch {
    const actual = await page.evaluate((sel) => document.querySelector(sel)?.textContent.trim() ?? '(not on the page)', selector);
    assert.fail(`${what}: expected ${JSON.stringify(String(expected))}, the page shows ${JSON.stringify(actual)} (${selector})`);
  }
}

async function waitForAvailable(page, sku, expected, what) {
  await waitForText(page, availableOf(sku), expected, `${what}: available units of ${sku}`);
}

async function screenshot(target, name) {
  if (!SCREENSHOTS_DIR) return;
  const file = path.join(SCREENSHOTS_DIR, name);
  if ('url' in target) await target.screenshot({ path: file, fullPage: true });
  else await target.screenshot({ path: file });
}

// ------------------------------------------------------------------ the tests

test('an admin watches stock and orders live, restocks, and manages products', { timeout: 240_000 }, async (t) => {
  const { context, page, errors } = await openDashboard();
  let navigations = 0;
  page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) navigations += 1; });
  const base = await baseCurrency();
  let adminToken;
  let order;

  await t.test('logs in through the form', async () => {
    await logInThroughForm(page, ADMIN_EMAIL, ADMIN_PASSWORD);
    await page.locator('[data-testid=stock-search]').waitFor({ state: 'visible', timeout: WAIT_MS });
    assert.equal(await page.locator('input[name=password]').isVisible(), false, 'the login form is put away');
    await waitForText(page, '#who', ADMIN_EMAIL, 'who is logged in');
    // Set once; a reload would drop it.
    await page.evaluate(() => { window.__dashboardMarker = 'no reload'; });
  });

  await t.test('a product created through the API appears with its stock', async () => {
    adminToken = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).access_token;
    const product = (sku, name, stock) => ({
      sku, name, category: 'browser-test', description: 'made by the dashboard browser test',
      price: { amount: '12.50', currency: base }, initial_stock: stock,
    });
    await expectStatus(201, 'POST', '/v1/admin/products', { token: adminToken, key: randomUUID(), body: product(SKU, `Test mug ${RUN}`, 10) });
    // A name with markup: the page shows it as text and runs nothing of it.
    const markup = `Test plate <img src=x onerror="window.__injected=1"> ${RUN}`;
    await expectStatus(201, 'POST', '/v1/admin/products', { token: adminToken, key: randomUUID(), body: product(OTHER_SKU, markup, 3) });
    await waitForAvailable(page, SKU, 10, 'a new product with 10 units');
    await waitForAvailable(page, OTHER_SKU, 3, 'a new product with 3 units');
    assert.ok((await page.textContent(stockRow(OTHER_SKU))).includes(markup), 'the name is shown as written');
    assert.equal(await page.locator(`${stockRow(OTHER_SKU)} img`).count(), 0, 'no element made from the name');
    assert.equal(await page.evaluate(() => window.__injected), undefined);
  });

  await t.test('a checkout elsewhere lowers the available count without a reload', async () => {
    // With the product list and the level reads cut off, only the stock stream can tell the page.
    const onlyTheStream = (route) => {
      const url = new URL(route.request().url());
      const stream = url.pathname === '/v1/inventory/stream' && !url.searchParams.has('sku');
      return stream ? route.continue() : route.abort();
    };
    await page.route('**/v1/products**', (route) => route.abort());
    await page.route('**/v1/inventory/**', onlyTheStream);
    const customer = await newCustomer('buyer');
    order = await expectStatus([201, 202], 'POST', '/v1/checkout', {
      token: customer.token, key: randomUUID(),
      body: { payment_token: 'tok_visa', items: [{ sku: SKU, qty: 2 }] },
    });
    await waitForAvailable(page, SKU, 8, 'after a checkout of 2');
    await page.unrouteAll();
    assert.equal(await page.evaluate(() => window.__dashboardMarker), 'no reload');
    assert.equal(navigations, 0, 'the page did not navigate');
  });

  await t.test('restocking from the page raises the available count', async () => {
    const qty = page.locator(`[data-testid=restock-qty][data-sku="${SKU}"]`);
    assert.equal(await qty.inputValue(), '', 'the restock quantity starts empty');
    await qty.fill('5');
    await page.click(`[data-testid=restock-submit][data-sku="${SKU}"]`);
    await waitForAvailable(page, SKU, 13, 'after restocking 5');
    const levels = await expectStatus(200, 'GET', `/v1/inventory/${SKU}`);
    assert.deepEqual([levels.on_hand, levels.reserved, levels.available], [13, 0, 13], 'the node has the restock');
    await page.waitForFunction((sel) => document.querySelector(sel).value === '', `[data-testid=restock-qty][data-sku="${SKU}"]`, { timeout: WAIT_MS });
  });

  await t.test('the order is listed, newest first, confirmed, with its history', async () => {
    const row = `[data-testid=order-row][data-order-id="${order.order_id}"]`;
    await waitForText(page, `${row} [data-testid=order-status]`, 'confirmed', 'the order\'s status');
    const placed = await page.$$eval('[data-testid=order-row]', (rows) => rows.map((r) => Date.parse(r.dataset.createdAt)));
    for (let i = 1; i < placed.length; i++) assert.ok(placed[i - 1] >= placed[i], 'orders are listed newest first');
    const confirmed = Number(await page.textContent('[data-testid=saga-confirmed]'));
    assert.ok(confirmed >= 1, `confirmed orders counted: ${confirmed}`);
    const rate = Number(await page.textContent('[data-testid=orders-per-minute]'));
    assert.ok(rate > 0, `orders per minute: ${rate}`);
    await page.click(row);
    await waitForText(page, `[data-testid=order-detail] [data-testid=order-line][data-sku="${SKU}"] [data-testid=order-line-qty]`, '2', 'the order line');
    const steps = await page.$$eval('[data-testid=order-detail] [data-testid=order-event]', (items) => items.map((i) => i.dataset.status));
    assert.equal(steps.at(-1), 'confirmed', `the saga's steps: ${steps.join(', ')}`);
    assert.ok(steps.length >= 2, `the saga's steps: ${steps.join(', ')}`);
  });

  await t.test('the search box shows only the matching SKUs', async () => {
    const search = page.locator('[data-testid=stock-search]');
    const row = (sku) => page.locator(stockRow(sku));
    await search.fill(SKU);
    await row(OTHER_SKU).waitFor({ state: 'hidden', timeout: WAIT_MS });
    await row(SKU).waitFor({ state: 'visible', timeout: WAIT_MS });
    await search.fill(`bt-${RUN.toLowerCase()}`);
    await row(OTHER_SKU).waitFor({ state: 'visible', timeout: WAIT_MS });
    await row(SKU).waitFor({ state: 'visible', timeout: WAIT_MS });
    await search.fill(`NO-SUCH-${RUN}`);
    await row(SKU).waitFor({ state: 'hidden', timeout: WAIT_MS });
    await search.fill('');
    await row(OTHER_SKU).waitFor({ state: 'visible', timeout: WAIT_MS });
    await row(SKU).waitFor({ state: 'visible', timeout: WAIT_MS });
  });

  await t.test('the low-stock list holds the SKUs at or below its threshold', async () => {
    await page.fill('[data-testid=stock-search]', `BT-${RUN}-`);
    await page.locator(`[data-testid=low-stock-row][data-sku="${OTHER_SKU}"]`).waitFor({ timeout: WAIT_MS });
    assert.equal(await page.locator(`[data-testid=low-stock-row][data-sku="${SKU}"]`).count(), 0, `${SKU} (13 units) is not low`);
    await page.fill('[data-testid=stock-search]', '');
  });

  await t.test('a product is created and repriced from the page', async () => {
    await page.fill('#product-sku', FORM_SKU);
    await page.fill('#product-name', `Test bowl ${RUN}`);
    await page.fill('#product-category', 'browser-test');
    await page.fill('#product-price', '7.5');
    await page.fill('#product-stock', '4');
    await page.click('#product-create');
    await waitForAvailable(page, FORM_SKU, 4, 'a product made with the form');
    const priceCell = `${stockRow(FORM_SKU)} [data-testid=price]`;
    await waitForText(page, priceCell, `7.50 ${base}`, 'its price');
    await page.click(`[data-testid=price-edit][data-sku="${FORM_SKU}"]`);
    await page.fill(`[data-testid=price-input][data-sku="${FORM_SKU}"]`, '8.25');
    await page.click(`[data-testid=price-save][data-sku="${FORM_SKU}"]`);
    await waitForText(page, priceCell, `8.25 ${base}`, 'its new price');
    const listed = await expectStatus(200, 'GET', '/v1/products?sort=newest&limit=50');
    const made = listed.items.find((p) => p.sku === FORM_SKU);
    assert.ok(made, `${FORM_SKU} is in the catalog`);
    assert.deepEqual(made.price, { amount: '8.25', currency: base });
    assert.equal(made.available, 4);
  });

  await t.test('a bad price is refused next to the field', async () => {
    await page.click(`[data-testid=price-edit][data-sku="${FORM_SKU}"]`);
    await page.fill(`[data-testid=price-input][data-sku="${FORM_SKU}"]`, '1.234');
    await page.click(`[data-testid=price-save][data-sku="${FORM_SKU}"]`);
    await page.waitForFunction((sel) => (document.querySelector(sel)?.textContent || '').length > 0,
      `[data-testid=price-error][data-sku="${FORM_SKU}"]`, { timeout: WAIT_MS });
    await page.click(`[data-testid=price-cancel][data-sku="${FORM_SKU}"]`);
    await waitForText(page, `${stockRow(FORM_SKU)} [data-testid=price]`, `8.25 ${base}`, 'the price, unchanged');
  });

  await t.test('screenshots', async () => {
    await page.click(`[data-testid=order-row][data-order-id="${order.order_id}"]`);
    await waitForText(page, '[data-testid=order-detail-status]', 'confirmed', 'the order shown');
    await page.evaluate(() => window.scrollTo(0, 0));
    await screenshot(page, 'dashboard.png');
    await screenshot(page.locator('.grid.stock'), 'stock.png');
    await screenshot(page.locator('.grid.orders'), 'orders.png');
  });

  await t.test('the cluster is shown, and a drain asks first', async () => {
    await page.locator('[data-testid=cluster-node]').first().waitFor({ timeout: WAIT_MS });
    const shards = Number(await page.locator('[data-testid=cluster-shards]').first().textContent());
    assert.ok(shards > 0, `shards of the first node: ${shards}`);
    const leaves = [];
    page.on('request', (req) => { if (req.url().endsWith('/v1/admin/cluster/leave')) leaves.push(req); });
    page.once('dialog', (dialog) => dialog.dismiss());
    await page.click('[data-testid=cluster-drain]');
    await page.waitForFunction(() => !document.querySelector('[data-testid=cluster-drain]').disabled, null, { timeout: WAIT_MS });
    assert.equal(leaves.length, 0, 'a dismissed confirm sends nothing');
    // The last node of a cluster refuses to leave: the page says why, next to the button. (Only
    // tried on a cluster of one, where the node cannot actually leave.)
    if (await page.locator('[data-testid=cluster-node]').count() === 1) {
      page.once('dialog', (dialog) => dialog.accept());
      const refused = page.waitForResponse((res) => res.url().endsWith('/v1/admin/cluster/leave'), { timeout: WAIT_MS });
      await page.click('[data-testid=cluster-drain]');
      assert.equal((await refused).status(), 409);
      await page.waitForFunction(() => document.getElementById('drain-error').textContent.includes('no other node'), null, { timeout: WAIT_MS });
    }
  });

  await t.test('a refused webhook URL is explained next to the form', async () => {
    await page.fill('#webhook-url', 'http://127.0.0.1:9/hook');
    await page.click('#webhook-create');
    await page.waitForFunction(() => document.getElementById('webhook-error').textContent.includes('url'), null, { timeout: WAIT_MS });
    await page.fill('#webhook-url', '');
  });

  assert.deepEqual(errors, [], 'no script errors and no Content-Security-Policy violations');
  await context.close();
});

test('a wrong password shows an error and starts no session', { timeout: 60_000 }, async () => {
  const { context, page, errors } = await openDashboard();
  const withToken = [];
  page.on('request', (req) => { if (req.headers().authorization) withToken.push(req.url()); });
  const answer = page.waitForResponse((res) => res.url().endsWith('/v1/auth/login'), { timeout: WAIT_MS });
  await logInThroughForm(page, ADMIN_EMAIL, `${ADMIN_PASSWORD}-wrong`);
  assert.equal((await answer).status(), 401);
  await waitForText(page, '[data-testid=login-error]', 'Wrong email or password.', 'the login error');
  assert.ok(await page.locator('input[name=password]').isVisible(), 'the login form stays');
  assert.equal(await page.locator('[data-testid=stock-search]').isVisible(), false, 'no dashboard');
  assert.deepEqual(withToken, [], 'no request carried a token');
  await screenshot(page, 'login-error.png');
  assert.deepEqual(errors, []);
  await context.close();
});

test('a customer account is refused', { timeout: 60_000 }, async () => {
  const customer = await newCustomer('not-admin');
  const { context, page } = await openDashboard();
  await logInThroughForm(page, customer.email, customer.password);
  await waitForText(page, '[data-testid=login-error]', 'This account is not an admin.', 'the login error');
  assert.equal(await page.locator('[data-testid=stock-search]').isVisible(), false, 'no dashboard');
  await context.close();
});

test('a page left open refreshes its session before the access token expires', { timeout: 90_000 }, async () => {
  // The page's clock is Playwright's: it runs in real time until it is fast-forwarded.
  const { context, page, errors } = await openDashboard({ beforeLoad: (p) => p.clock.install() });
  const loggedIn = page.waitForResponse((res) => res.url().endsWith('/v1/auth/login'), { timeout: WAIT_MS });
  await logInThroughForm(page, ADMIN_EMAIL, ADMIN_PASSWORD);
  let pair = await (await loggedIn).json();
  await page.locator('[data-testid=stock-search]').waitFor({ state: 'visible', timeout: WAIT_MS });
  // Twice the token's life: each time the page spends its latest refresh token (a spent one
  // would revoke the session: 401) and gets a new pair.
  for (const round of [1, 2]) {
    const refreshed = page.waitForResponse((res) => res.url().endsWith('/v1/auth/refresh'), { timeout: WAIT_MS });
    await page.clock.fastForward(pair.expires_in * 1000);
    const answer = await refreshed;
    assert.equal(answer.status(), 200, `refresh ${round} succeeded`);
    assert.equal(answer.request().postDataJSON().refresh_token, pair.refresh_token, `refresh ${round} spent the latest refresh token`);
    pair = await answer.json();
  }
  // The page goes on with the latest pair: its admin reads with that token succeed.
  const next = await page.waitForResponse(
    (res) => res.url().includes('/v1/admin/orders') && res.request().headers().authorization === `Bearer ${pair.access_token}`,
    { timeout: WAIT_MS },
  );
  assert.equal(next.status(), 200);
  assert.equal(await page.locator('input[name=password]').isVisible(), false, 'still logged in');
  assert.deepEqual(errors, []);
  await context.close();
});
