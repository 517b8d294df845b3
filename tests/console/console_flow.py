"""The console in real headless Chromium, as a person uses it.

Driven by tests/it/console.rs, which starts the gateway and an upstream and passes:
  KEYGATE_ADMIN_URL, KEYGATE_PROXY_URL, KEYGATE_TOKEN, KEYGATE_SCREENSHOTS (a folder).

Flow: sign in with the admin token; create a key with a scope, a location and a role
grant; read the secret shown once (and download it as <name>.apikey); use it against
the proxy (200); find it by search and the status filter; revoke it (with the
confirmation); see the proxy refuse it. Screenshots of the key list and of the
show-once dialog go to KEYGATE_SCREENSHOTS. Uses the system Chromium: the network is
closed, and Playwright must never download a browser.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

ADMIN = os.environ["KEYGATE_ADMIN_URL"].rstrip("/")
PROXY = os.environ["KEYGATE_PROXY_URL"].rstrip("/")
TOKEN = os.environ["KEYGATE_TOKEN"]
SHOTS = os.environ["KEYGATE_SCREENSHOTS"]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def proxy_get(path, key):
    """(status, error code) of a GET through the proxy with `key`."""
    req = urllib.request.Request(PROXY + path, headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, None
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
        return e.code, body.get("error", {}).get("code")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def main():
    os.makedirs(SHOTS, exist_ok=True)
    name = f"console key {int(time.time() * 1000) % 100000}"
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1440, "height": 900}
        )
        page = context.new_page()
        # Any console error (a CSP violation, a script error) fails the run.
        page.on(
            "console",
            lambda m: problems.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: problems.append(str(e)))

        page.goto(ADMIN + "/")
        expect(page).to_have_title("keygate console")

        # Sign in (a wrong token first: refused, stays on the sign-in form).
        page.get_by_label("Admin token or key").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert").first).to_contain_text("refused")
        problems.clear()  # the 401 is logged by Chromium as a failed resource load
        page.get_by_label("Admin token or key").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
        check(
            page.evaluate("() => document.cookie") == "",
            "no cookie holds the credential",
        )
        check("not-the-token" not in page.url and TOKEN not in page.url, "credential not in the URL")
        check(
            page.evaluate("() => sessionStorage.getItem('keygate.credential')") == TOKEN,
            "credential in sessionStorage",
        )
        expect(page.get_by_label("Search")).to_be_visible()
        expect(page.get_by_label("Status")).to_be_visible()

        # Create a key with a scope, a location and a role x location grant.
        page.get_by_role("button", name="Create key").click()
        dialog = page.locator("#create-dialog")
        expect(dialog).to_be_visible()
        check(
            page.evaluate("() => document.getElementById('create-dialog').contains(document.activeElement)"),
            "focus moved into the create dialog",
        )
        dialog.get_by_label("Name", exact=True).fill(name)
        dialog.get_by_label("Description", exact=True).fill("made in the console test")
        dialog.get_by_label("User ID").fill("console-user")
        dialog.get_by_label("Business ID").fill("acme")
        scope = dialog.get_by_label("items:read", exact=True)
        expect(scope).to_have_attribute("type", "checkbox")
        scope.check()
        # The description sits beside the label, not inside it.
        expect(dialog.get_by_text("Read items", exact=True)).to_be_visible()
        dialog.get_by_label("hq", exact=True).check()
        dialog.get_by_label("plant-1", exact=True).check()
        dialog.get_by_label("editor at plant-1").check()
        expires = dialog.get_by_label("Expires")
        options = expires.locator("option").all_inner_texts()
        check(
            options == ["1 hour", "12 hours", "1 day", "5 days", "1 year", "Custom", "Never"],
            f"expiry presets {options}",
        )
        expires.select_option(label="1 day")
        dialog.screenshot(path=os.path.join(SHOTS, "create-form.png"))
        dialog.get_by_role("button", name="Create", exact=True).click()

        # The secret, shown once.
        secret_dialog = page.locator("#secret-dialog")
        expect(secret_dialog).to_be_visible()
        expect(secret_dialog).to_contain_text("will not be shown again")
        secret = secret_dialog.get_by_label("API key").input_value()
        check(secret.startswith("kg_") and len(secret) > 20, "a secret is shown")
        page.screenshot(path=os.path.join(SHOTS, "show-once-dialog.png"))
        with page.expect_download() as dl:
            secret_dialog.get_by_role("button", name="Download .apikey").click()
        download = dl.value
        check(download.suggested_filename == f"{name}.apikey", f"download named {download.suggested_filename}")
        saved = os.path.join(SHOTS, "downloaded.apikey")
        download.save_as(saved)
        with open(saved, encoding="utf-8") as f:
            check(f.read() == secret, "the .apikey file holds the secret")
        os.remove(saved)
        secret_dialog.get_by_role("button", name="Copy").click()
        expect(page.locator("#copy-status")).not_to_be_empty()
        secret_dialog.get_by_role("button", name="Done").click()
        expect(secret_dialog).to_be_hidden()
        check(secret not in page.content(), "the secret is gone from the page after Done")

        # It works through the proxy: a scope everywhere, a role at its location.
        check(proxy_get("/v1/items/1", secret) == (200, None), "proxy allows the new key (scope)")
        check(
            proxy_get("/v1/locations/plant-1/items", secret) == (200, None),
            "proxy allows the new key (editor at plant-1)",
        )
        check(
            proxy_get("/v1/locations/hq/items", secret)[0] == 403,
            "proxy refuses editor scopes at hq",
        )

        # The list shows it with its dates and status; screenshot it.
        row = page.locator("#keys-body tr", has_text=name)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("active")
        expect(row).to_contain_text("never")  # last use, before the list reloads
        page.screenshot(path=os.path.join(SHOTS, "key-list.png"), full_page=True)

        # Find it by search, then by the status filter.
        page.get_by_label("Search").fill(name)
        expect(page.locator("#keys-body tr")).to_have_count(1)
        expect(page.locator("#keys-body tr").first).to_contain_text(name)
        page.get_by_label("Search").fill("no key is called this")
        expect(page.locator("#keys-body tr")).to_have_count(0)
        page.get_by_label("Search").fill(name)
        expect(page.locator("#keys-body tr")).to_have_count(1)
        page.get_by_label("Status").select_option(label="Revoked")
        expect(page.locator("#keys-body tr")).to_have_count(0)
        page.get_by_label("Status").select_option(label="Active")
        expect(page.locator("#keys-body tr")).to_have_count(1)
        page.get_by_label("Status").select_option(label="All")

        # Revoke, with confirmation (Cancel first: nothing happens).
        row = page.locator("#keys-body tr", has_text=name)
        row.get_by_role("button", name="Revoke").click()
        confirm = page.locator("#revoke-dialog")
        expect(confirm).to_be_visible()
        confirm.get_by_role("button", name="Cancel").click()
        expect(confirm).to_be_hidden()
        check(proxy_get("/v1/items/1", secret)[0] == 200, "cancel keeps the key")
        row.get_by_role("button", name="Revoke").click()
        confirm.get_by_role("button", name="Yes, revoke").click()
        expect(confirm).to_be_hidden()
        expect(page.locator("#keys-body tr", has_text=name)).to_contain_text("revoked")
        deadline = time.time() + 1.0
        while True:
            status = proxy_get("/v1/items/1", secret)
            if status == (401, "invalid_api_key"):
                break
            if time.time() > deadline:
                raise AssertionError(f"the proxy still answers {status} a second after revocation")
            time.sleep(0.05)
        check(True, "the proxy refuses the revoked key")

        # Sign out: the credential leaves the tab.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Admin token or key")).to_be_visible()
        check(
            page.evaluate("() => sessionStorage.getItem('keygate.credential')") is None,
            "signing out forgets the credential",
        )
        browser.close()
    check(not problems, f"no console errors: {problems}")
    print("console flow: done")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure with its message
        print(f"console flow failed: {e!r}", file=sys.stderr)
        sys.exit(1)
