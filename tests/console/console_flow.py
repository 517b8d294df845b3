"""The console in real headless Chromium, as a person uses it.

Driven by tests/it/console.rs, which starts the gateway and an upstream and passes:
  KEYGATE_ADMIN_URL, KEYGATE_PROXY_URL, KEYGATE_TOKEN, KEYGATE_SCREENSHOTS (a folder).

Flow: sign in with the admin token; create a key, first with field errors (shown under
their field, in the form's words, the first one focused), with a scope, locations and a
role grant (the grid offers only the locations chosen); read the secret shown once (and
download it as <name>.apikey); "Done" closes it only once "I have stored the key in a
safe place" is ticked; use the key against the proxy (200); open its detail view and the
audit log by keyboard; find it by search and the status filter; revoke it (with the
confirmation); see the proxy refuse it.

Every view (sign-in, key list, create form, field errors, show-once dialog, key detail,
audit log) is checked at 1,280 and 420 px wide: no control may reach outside the
viewport and the page may not scroll sideways (the check is shown to catch an injected
wide button); a screenshot of each, `<view>-<width>.png`, goes to KEYGATE_SCREENSHOTS.
Uses the system Chromium: the network is closed, and Playwright must never download a
browser.
"""

import json
import os
import re
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


def admin_patch(path, body):
    """PATCH on the admin API with the token; the answer's JSON (fails on an error)."""
    req = urllib.request.Request(ADMIN + path, data=json.dumps(body).encode(), method="PATCH",
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def admin_get(path):
    req = urllib.request.Request(ADMIN + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for_usage(key_id, allowed, refused):
    """Waits (at most 15 s) until the gateway's batched counts of `key_id` reach the store."""
    deadline = time.monotonic() + 15
    while True:
        u = admin_get(f"/v1/keys/{key_id}/usage")
        if (u["allowed"], u["refused"]) == (allowed, refused):
            return
        check(time.monotonic() < deadline, f"usage reached the store: {u['allowed']}/{u['refused']}")
        time.sleep(0.2)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


WIDTHS = ((1280, 900), (420, 860))

# Every rendered control that reaches outside the viewport, and a page that scrolls
# sideways. The skip link sits off-screen on purpose until it is focused.
OVERFLOW = """() => {
  const w = document.documentElement.clientWidth;
  const bad = [];
  const sw = document.documentElement.scrollWidth;
  if (sw > w) bad.push(`the page scrolls sideways: ${sw} > ${w}`);
  for (const e of document.querySelectorAll('button, input, select, textarea, a[href], [tabindex]')) {
    if (e.classList.contains('skip')) continue;
    const r = e.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < -0.5 || r.right > w + 0.5) {
      const what = (e.textContent || e.getAttribute('aria-label') || e.id || '').trim().slice(0, 40);
      bad.push(`${e.tagName.toLowerCase()}#${e.id} "${what}" spans ${Math.round(r.left)}..${Math.round(r.right)} of ${w}`);
    }
  }
  return bad;
}"""

FRAME = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"


def views(page, name, show=None):
    """Checks `name` at each width for overflow and screenshots it; back to 1,280 px.
    With `show` (a locator in an open dialog), the viewport is shot with it scrolled into view."""
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate(FRAME)
        bad = page.evaluate(OVERFLOW)
        check(not bad, f"{name} at {width} px: nothing overflows the viewport {bad}")
        if show is not None:
            show.scroll_into_view_if_needed()
        page.screenshot(path=os.path.join(SHOTS, f"{name}-{width}.png"), full_page=show is None)
    page.set_viewport_size({"width": WIDTHS[0][0], "height": WIDTHS[0][1]})
    page.evaluate(FRAME)


def focused_id(page):
    return page.evaluate("() => document.activeElement && document.activeElement.id")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    name = f"console key {int(time.time() * 1000) % 100000}"
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1280, "height": 900}
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
        views(page, "sign-in")

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
        expect(page.locator("#keys-body tr")).to_have_count(3)
        views(page, "key-list")

        # Create a key with a scope, a location and a role x location grant.
        page.get_by_role("button", name="Create key").click()
        dialog = page.locator("#create-dialog")
        expect(dialog).to_be_visible()
        check(
            page.evaluate("() => document.getElementById('create-dialog').contains(document.activeElement)"),
            "focus moved into the create dialog",
        )
        # Field errors: under their field, in the form's words, the first one focused.
        dialog.get_by_role("button", name="Create", exact=True).click()
        for field, words in (("new-name", "Name is required"), ("new-user", "User ID is required"),
                             ("new-business", "Business ID is required")):
            error = page.locator(f"#{field}-error")
            expect(error).to_be_visible()
            expect(error).to_contain_text(words)
            check(
                page.evaluate(f"() => document.getElementById('{field}').parentElement.contains(document.getElementById('{field}-error'))"),
                f"the {words!r} error sits in its field",
            )
            expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
            expect(page.locator(f"#{field}")).to_have_attribute("aria-describedby", f"{field}-error")
        check(focused_id(page) == "new-name", "the first field in error has the focus")
        views(page, "create-errors", dialog.get_by_label("Name", exact=True))
        dialog.get_by_label("Name", exact=True).fill(name)
        dialog.get_by_label("User ID").fill("not an id!")
        dialog.get_by_role("button", name="Create", exact=True).click()
        expect(page.locator("#new-name-error")).to_be_hidden()
        expect(page.locator("#new-user-error")).to_contain_text("User ID must be 1 to 128 characters")
        check(focused_id(page) == "new-user", "the User ID error has the focus")
        # An error only the server knows, said in the field's words at its field.
        dialog.get_by_label("User ID").fill("console-user")
        dialog.get_by_label("Business ID").fill("acme")
        dialog.get_by_label("Expires").select_option(label="Custom")
        dialog.get_by_label("Custom expiry (your local time)").fill("2001-01-01T00:00")
        dialog.get_by_role("button", name="Create", exact=True).click()
        expect(page.locator("#new-expires-at-error")).to_have_text("Custom expiry must be in the future")
        check(focused_id(page) == "new-expires-at", "the server's expires_at error focuses Custom expiry")
        # Chromium logs that expected 400 as a failed resource load.
        problems[:] = [p for p in problems if "status of 400" not in p]

        dialog.get_by_label("Description", exact=True).fill("made in the console test")
        scope = dialog.get_by_label("items:read", exact=True)
        expect(scope).to_have_attribute("type", "checkbox")
        scope.check()
        # The description sits beside the label, not inside it.
        expect(dialog.get_by_text("Read items", exact=True)).to_be_visible()
        # The role grid offers only the locations chosen for the key.
        expect(page.locator("#grant-empty")).to_be_visible()
        expect(page.locator("#grant-body input")).to_have_count(0)
        dialog.get_by_label("hq", exact=True).check()
        expect(dialog.get_by_label("viewer at hq")).to_have_count(1)
        expect(dialog.get_by_label("editor at plant-1")).to_have_count(0)
        dialog.get_by_label("plant-1", exact=True).check()
        expect(page.locator("#grant-head th")).to_have_text(["Role", "hq", "plant-1"])
        dialog.get_by_label("editor at plant-1").check()
        for absent in ("editor at plant-2", "editor at all locations"):
            expect(dialog.get_by_label(absent)).to_have_count(0)
        dialog.get_by_label("All locations (*)").check()
        expect(page.locator("#grant-head th")).to_have_text(["Role", "hq", "plant-1", "plant-2", "All (*)"])
        expect(dialog.get_by_label("editor at plant-1")).to_be_checked()
        dialog.get_by_label("All locations (*)").uncheck()
        expect(dialog.get_by_label("editor at plant-2")).to_have_count(0)
        expect(dialog.get_by_label("editor at plant-1")).to_be_checked()
        expires = dialog.get_by_label("Expires")
        options = expires.locator("option").all_inner_texts()
        check(
            options == ["1 hour", "12 hours", "1 day", "5 days", "1 year", "Custom", "Never"],
            f"expiry presets {options}",
        )
        expires.select_option(label="1 day")
        views(page, "create-form", page.locator("#grant-grid"))
        dialog.get_by_role("button", name="Create", exact=True).click()

        # The secret, shown once.
        secret_dialog = page.locator("#secret-dialog")
        expect(secret_dialog).to_be_visible()
        expect(secret_dialog).to_contain_text("will not be shown again")
        secret = secret_dialog.get_by_label("API key").input_value()
        check(secret.startswith("kg_") and len(secret) > 20, "a secret is shown")
        views(page, "show-once-dialog", secret_dialog.get_by_role("button", name="Done"))
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
        # "Done" (or Escape) does not close it before the key is said to be stored.
        secret_dialog.get_by_role("button", name="Done").click()
        expect(secret_dialog).to_be_visible()
        stored = secret_dialog.get_by_label("I have stored the key in a safe place")
        expect(page.locator("#secret-stored-error")).to_contain_text("I have stored the key in a safe place")
        check(focused_id(page) == "secret-stored", "the unticked box has the focus")
        page.keyboard.press("Escape")
        expect(secret_dialog).to_be_visible()
        check(secret_dialog.get_by_label("API key").input_value() == secret, "the secret is still shown")
        stored.check()
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
        views(page, "key-list-created")
        # At 420 px the list is cards, each with its actions in view.
        page.set_viewport_size({"width": 420, "height": 860})
        check(
            row.evaluate("(tr) => getComputedStyle(tr).display") in ("block", "flex"),
            "at 420 px a key is a card, not a table row",
        )
        expect(row.get_by_role("button", name="Revoke")).to_be_in_viewport()
        page.set_viewport_size({"width": 1280, "height": 900})

        # The key's detail view, by keyboard: its record, grants as a matrix, a countdown,
        # and the quota the operator set through the admin API, spent once since.
        key_id = row.get_attribute("data-id")
        admin_patch(f"/v1/keys/{key_id}", {"quota": {"limit": 1000, "period": "1d"}})
        check(proxy_get("/v1/items/1", secret)[0] == 200, "the key spends one unit of its quota")
        # Three allowed and one refused so far; the detail view charts them once flushed.
        wait_for_usage(key_id, 3, 1)
        row.get_by_role("link", name=name).focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        check(focused_id(page) == "detail-title", "the detail view's heading has the focus")
        check(page.url.endswith("#/keys/" + key_id), "the detail view has its own address")
        fields = page.locator("#detail-fields")
        for label, value in (("ID", key_id), ("User ID", "console-user"), ("Business ID", "acme"),
                             # Used through the proxy above: "never" until the 5 s
                             # last-use flush, then the time (which one is a race).
                             ("Created by", "token"),
                             ("Last used", re.compile(r"never|\d{4}-\d\d-\d\d \d\d:\d\d UTC")),
                             ("Scopes", "items:read"),
                             ("Locations", "hq, plant-1"), ("Description", "made in the console test"),
                             ("Status", "active"), ("Key prefix", secret[:6]),
                             ("Plan", "none"), ("Own rate limits", "the routes"),
                             ("Quota", re.compile(r"99\d of 1000 per 1d left, refills \d{4}-\d\d-\d\d 00:00 UTC"))):
            pair = fields.locator(".pair", has=page.locator("dt", has_text=label))
            expect(pair.first).to_contain_text(value)
        countdown = page.locator("#detail-countdown")
        expect(countdown).to_have_text(re.compile(r"^in \d+ (d|h|min)"))
        before = countdown.inner_text()
        expect(countdown).not_to_have_text(before, timeout=3000)
        check(True, f"the expiry counts down from {before!r}")
        expect(page.get_by_label("editor at plant-1: granted")).to_have_text("\u2713")
        expect(page.locator("#detail-usage-summary")).to_contain_text("3 allowed, 1 refused (insufficient_scope 1)")
        expect(page.locator("#detail-usage svg rect.bar-allowed")).to_have_count(1)
        expect(page.locator("#detail-usage svg rect.bar-refused")).to_have_count(1)
        expect(page.get_by_role("img", name="3 allowed and 1 refused requests in 168 hours")).to_be_visible()
        views(page, "key-detail")
        page.get_by_role("link", name="Back to keys").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
        row = page.locator("#keys-body tr", has_text=name)
        expect(row.get_by_role("img", name="4 requests in the last 7 days")).to_be_visible()

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

        # The audit log, by keyboard from the navigation.
        page.get_by_role("link", name="Audit log").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Audit log", exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="Audit log")).to_have_attribute("aria-current", "page")
        expect(page.get_by_role("link", name="Keys", exact=True)).not_to_have_attribute("aria-current", "page")
        events = page.locator("#audit-body tr", has_text=key_id)
        expect(events).to_have_count(3)  # created, updated (its quota), revoked
        expect(events.first).to_contain_text("revoked")
        expect(events.nth(1)).to_contain_text("changed quota")
        expect(events.last).to_contain_text("created")
        expect(events.last).to_contain_text("token")
        views(page, "audit-log")
        events.first.get_by_role("link").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        expect(page.locator("#detail-fields")).to_contain_text("revoked")

        # The overflow check can fail: a wide control is caught.
        bad = page.evaluate("""() => {
          const b = document.createElement('button');
          b.id = 'too-wide'; b.textContent = 'wide'; b.style.width = '1500px';
          document.getElementById('main').append(b);
          return 0;
        }""")
        bad = page.evaluate(OVERFLOW)
        check(any("too-wide" in b for b in bad), f"the overflow check catches a wide button: {bad}")
        page.evaluate("() => document.getElementById('too-wide').remove()")

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
