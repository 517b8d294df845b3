"""`keygate demo`'s console, signed in with the credential the demo printed.

Driven by tests/it/demo.rs, which runs `keygate demo` and passes what it printed:
  KEYGATE_CONSOLE_URL (the console line), KEYGATE_CREDENTIAL (the "sign in with" value),
  KEYGATE_DEMO_KEY_ID (the demo key's id), KEYGATE_SCREENSHOTS (a folder).

Flow: open the printed URL, type the printed credential into "Admin token or key", press
"Sign in", and find the demo key in the key list. Uses the system Chromium only.
"""

import os
import sys

from playwright.sync_api import expect, sync_playwright

URL = os.environ["KEYGATE_CONSOLE_URL"]
CREDENTIAL = os.environ["KEYGATE_CREDENTIAL"]
DEMO_KEY_ID = os.environ["KEYGATE_DEMO_KEY_ID"]
SHOTS = os.environ["KEYGATE_SCREENSHOTS"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    os.makedirs(SHOTS, exist_ok=True)
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(URL)
        page.get_by_label("Admin token or key").fill(CREDENTIAL)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
        row = page.locator("#keys-body tr", has_text=DEMO_KEY_ID)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("demo")
        expect(row).to_contain_text("active")
        page.screenshot(path=os.path.join(SHOTS, "demo-key-list.png"), full_page=True)
        browser.close()
    if problems:
        raise AssertionError(f"console errors: {problems}")
    print("demo console: signed in with the printed credential, demo key listed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure with its message
        print(f"demo console failed: {e!r}", file=sys.stderr)
        sys.exit(1)
