// Logs into Home Assistant in headless Chromium, opens the Assist dialog, sends a message and
// waits for the RKLLM agent's reply. Usage: node assist.mjs BASE_URL USER PASSWORD SCREENSHOT [MESSAGE]
import { chromium } from "playwright-core";

// Text of an element, including what its children render in shadow roots (ha-markdown).
const deepText = (element) => {
  const walk = (node) =>
    node.nodeType === Node.TEXT_NODE
      ? node.textContent
      : [...(node.shadowRoot?.childNodes ?? []), ...node.childNodes].map(walk).join("");
  return walk(element);
};

const [base, username, password, screenshot, message = "Hello! What can you do?"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
try {
  await page.goto(base);
  await page.locator('input[autocomplete="username"]').fill(username, { timeout: 60000 });
  await page.locator('input[type="password"]').fill(password);
  await page.keyboard.press("Enter");
  await page.waitForURL((url) => !url.pathname.startsWith("/auth"), { timeout: 60000 });
  await page.locator("home-assistant-main").waitFor({ timeout: 60000 });

  await page.locator('button[aria-label^="Assist"]').click({ timeout: 30000 });
  const dialog = page.locator("ha-voice-command-dialog");
  const input = dialog.locator("ha-assist-chat input, ha-assist-chat textarea").first();
  await input.waitFor({ timeout: 30000 });
  await input.fill(message);
  await input.press("Enter");

  // The reply streams into a new bubble after the greeting; done when its text stops changing.
  const bubbles = dialog.locator(".message.hass");
  let text = "";
  for (let stable = 0, polls = 0; stable < 3; polls++) {
    if (polls > 360) throw new Error(`no complete reply after 3 minutes (last: ${JSON.stringify(text)})`);
    await page.waitForTimeout(500);
    const current = (await bubbles.count()) >= 2 ? (await bubbles.last().evaluate(deepText)).trim() : "";
    stable = current.length > 3 && current === text ? stable + 1 : 0;
    text = current;
  }
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ reply: text }));
} catch (error) {
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-failure.png") });
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
}
