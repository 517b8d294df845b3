"""Changing a key in place in the console, in real headless Chromium (issue 18).

Driven by tests/it/console.rs, which starts the gateway and an upstream and passes:
  KEYGATE_ADMIN_URL, KEYGATE_PROXY_URL, KEYGATE_TOKEN, KEYGATE_SCREENSHOTS (a folder).

Flow: sign in with the admin token; create a key with metadata and an IP allowlist,
first with a bad metadata name and a bad address (both errors next to their field, in
the field's words, the first one focused); Suspend it from the list (the status shows
`disabled`, the proxy answers 401 disabled_api_key); Resume it from its detail view
(the proxy answers 200); the detail view shows metadata, allowed IPs and the update
time; Edit it: remove a scope (the PATCH carries only `scopes`; the proxy answers 403
insufficient_scope), enter a bad metadata name and a bad address (both errors next to
their field, the first focused), see the server's own 400 naming `allowed_ips[1]` or
`metadata` land next to that field, narrow the allowlist (403 ip_forbidden) and widen it
again (200); revoke it (no Edit, Suspend or Resume any more); signed in with an admin
key lacking a scope, an edit of a key holding it is refused (403) at Scopes. Prints `edited key: <id>`
for the Rust test to check the record and what the upstream received.

Views are checked at 1,280 and 420 px (nothing reaches outside the viewport, the page
does not scroll sideways) and screenshot as `<view>-<width>.png` in KEYGATE_SCREENSHOTS.
"""

import json
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

from console_flow import ADMIN, CHROMIUM_ARGS, SHOTS, TOKEN, check, focused_id, proxy_get, views


def proxy_until(path, key, want, what):
    """Polls the proxy until it answers `want` (status, code), for at most a second:
    every gateway applies an edit within one."""
    deadline = time.time() + 1.0
    while True:
        got = proxy_get(path, key)
        if got == want:
            check(True, what)
            return
        if time.time() > deadline:
            raise AssertionError(f"{what}: the proxy still answers {got} a second later, not {want}")
        time.sleep(0.05)


def admin_api(method, path, body=None):
    """The admin API with the token, as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(ADMIN + path, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def rewriting(bad):
    """A route handler that lets a PATCH body through changed by `bad(body)`."""

    def handle(route):
        if route.request.method != "PATCH":
            return route.continue_()
        body = json.loads(route.request.post_data)
        bad(body)
        return route.continue_(post_data=json.dumps(body))

    return handle


def focused_label(page):
    return page.evaluate("() => document.activeElement && document.activeElement.getAttribute('aria-label')")


def detail_pair(page, label):
    return page.locator("#detail-fields .pair", has=page.locator("dt", has_text=label)).first


def expect_field_error(page, box, words, field):
    """`box` shows `words` and sits in `field` (a JavaScript expression)."""
    error = page.locator(f"#{box}")
    expect(error).to_be_visible()
    expect(error).to_contain_text(words)
    check(
        page.evaluate(f"() => ({field}).contains(document.getElementById('{box}'))"),
        f"the {words!r} error sits in its field",
    )


def expect_bad_entries(page, dialog, p, name_words, row, ip_words):
    """A bad metadata name in entry `row` and a bad address, in the form whose ids start
    with `p`: both errors next to their field, in its words; the name has the focus."""
    expect_field_error(page, f"{p}metadata-error", name_words, f"document.getElementById('{p}metadata-fieldset')")
    expect_field_error(page, f"{p}allowed-ips-error", ip_words,
                       f"document.getElementById('{p}allowed-ips').parentElement")
    check(focused_label(page) == f"Metadata name {row}", "the first field in error (the bad name) has the focus")
    expect(dialog.get_by_label(f"Metadata name {row}")).to_have_attribute("aria-invalid", "true")
    expect(dialog.get_by_label("Allowed IPs")).to_have_attribute("aria-invalid", "true")


def main():
    name = f"edit flow key {int(time.time() * 1000) % 100000}"
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(ADMIN + "/")
        page.get_by_label("Admin token or key").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()

        # Create, with metadata and an allowlist: a bad name and a bad address first.
        page.get_by_role("button", name="Create key").click()
        dialog = page.locator("#create-dialog")
        dialog.get_by_label("Name", exact=True).fill(name)
        dialog.get_by_label("User ID").fill("edit-user")
        dialog.get_by_label("Business ID").fill("acme")
        dialog.get_by_label("items:read", exact=True).check()
        dialog.get_by_label("reports:read", exact=True).check()
        dialog.get_by_label("hq", exact=True).check()
        expect(page.locator("#new-metadata-empty")).to_be_visible()
        dialog.get_by_role("button", name="Add metadata").click()
        check(focused_label(page) == "Metadata name 1", "Add metadata focuses the new name")
        dialog.get_by_label("Metadata name 1").fill("Plan")
        dialog.get_by_label("Metadata value 1").fill("gold")
        dialog.get_by_role("button", name="Add metadata").click()
        dialog.get_by_label("Metadata name 2").fill("team")
        dialog.get_by_label("Metadata value 2").fill("core-7")
        dialog.get_by_role("button", name="Add metadata").click()
        dialog.get_by_label("Metadata name 3").fill("gone")
        dialog.get_by_label("Remove metadata entry 3").click()
        expect(dialog.locator("#new-metadata-rows .meta-row")).to_have_count(2)
        dialog.get_by_label("Allowed IPs").fill("127.0.0.1\n10.0.0.300")
        dialog.get_by_role("button", name="Create", exact=True).click()
        expect_bad_entries(page, dialog, "new-", "Metadata: `Plan` is not a valid name", 1,
                           "Allowed IPs line 2: `10.0.0.300` is not an IP address or CIDR")
        views(page, "create-metadata-errors", dialog.get_by_label("Allowed IPs"))
        dialog.get_by_label("Metadata name 1").fill("plan")
        dialog.get_by_role("button", name="Create", exact=True).click()
        expect(page.locator("#new-metadata-error")).to_be_hidden()
        check(focused_id(page) == "new-allowed-ips", "the address left in error has the focus")
        dialog.get_by_label("Allowed IPs").fill("127.0.0.1\n2001:db8::/32\n")
        dialog.get_by_role("button", name="Create", exact=True).click()
        secret_dialog = page.locator("#secret-dialog")
        expect(secret_dialog).to_be_visible()
        secret = secret_dialog.get_by_label("API key").input_value()
        secret_dialog.get_by_label("I have stored the key in a safe place").check()
        secret_dialog.get_by_role("button", name="Done").click()
        expect(secret_dialog).to_be_hidden()
        check(proxy_get("/v1/items/1", secret) == (200, None), "the new key works from 127.0.0.1")
        check(proxy_get("/v1/reports", secret) == (200, None), "the new key holds reports:read")

        # Suspend from the list: the status shows disabled, the proxy refuses it.
        row = page.locator("#keys-body tr", has_text=name)
        expect(row.locator(".badge")).to_have_text("active")
        expect(row).to_contain_text("From: 127.0.0.1, 2001:db8::/32")
        expect(row.get_by_role("button", name="Resume")).to_have_count(0)
        row.get_by_role("button", name="Suspend").click()
        expect(row.locator(".badge")).to_have_text("disabled")
        expect(row.get_by_role("button", name="Suspend")).to_have_count(0)
        expect(row.get_by_role("button", name="Resume")).to_be_visible()
        check(page.evaluate("() => document.activeElement.textContent") == "Resume",
              "Resume, in Suspend's place, has the focus")
        expect(page.locator("#list-status")).to_contain_text(f'Suspended "{name}"')
        looks = page.evaluate("""() => [...document.querySelectorAll('#keys-body .badge')].map((b) => {
          const s = getComputedStyle(b); return [b.textContent, s.color, s.backgroundColor, s.borderStyle].join(' ');
        })""")
        disabled = {x.split(" ", 1)[1] for x in looks if x.startswith("disabled")}
        active = {x.split(" ", 1)[1] for x in looks if x.startswith("active")}
        check(disabled and active and not disabled & active, f"disabled looks unlike active: {looks}")
        proxy_until("/v1/items/1", secret, (401, "disabled_api_key"), "the proxy refuses the suspended key")
        page.get_by_label("Search").fill(name)
        page.get_by_label("Status").select_option(label="Disabled (suspended)")
        expect(page.locator("#keys-body tr")).to_have_count(1)
        page.get_by_label("Status").select_option(label="Active")
        expect(page.locator("#keys-body tr")).to_have_count(0)
        page.get_by_label("Status").select_option(label="All")
        page.get_by_label("Search").fill("")
        expect(page.locator("#keys-body tr")).to_have_count(2)
        views(page, "key-list-disabled")
        page.set_viewport_size({"width": 420, "height": 860})
        for button in ("Edit", "Resume", "Rotate", "Revoke"):
            expect(row.get_by_role("button", name=button)).to_be_in_viewport()
        page.set_viewport_size({"width": 1280, "height": 900})

        # The detail view: metadata, allowed IPs, the update time; Resume from there.
        key_id = row.get_attribute("data-id")
        row.get_by_role("link", name=name).click()
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        expect(detail_pair(page, "Status")).to_contain_text("disabled")
        expect(detail_pair(page, "Metadata").locator("code")).to_have_text(["plan: gold", "team: core-7"])
        expect(detail_pair(page, "Allowed IPs").locator("code")).to_have_text(["127.0.0.1", "2001:db8::/32"])
        expect(detail_pair(page, "Updated")).to_contain_text("UTC")
        actions = page.locator("#detail-actions")
        actions.get_by_role("button", name="Resume").click()
        expect(detail_pair(page, "Status")).to_contain_text("active")
        expect(actions.get_by_role("button", name="Resume")).to_have_count(0)
        check(focused_id(page) == "" and page.evaluate("() => document.activeElement.textContent") == "Suspend",
              "Suspend, in Resume's place, has the focus")
        proxy_until("/v1/items/1", secret, (200, None), "the proxy accepts the resumed key")
        views(page, "key-detail-metadata")

        # Edit: the form holds the key as it is; the grid offers only its locations.
        actions.get_by_role("button", name="Edit").click()
        edit = page.locator("#edit-dialog")
        expect(edit).to_be_visible()
        check(focused_id(page) == "edit-name", "the Edit dialog opens on Name")
        expect(edit.get_by_label("Name", exact=True)).to_have_value(name)
        expect(edit.get_by_label("reports:read", exact=True)).to_be_checked()
        expect(edit.get_by_label("hq", exact=True)).to_be_checked()
        expect(page.locator("#edit-grant-head th")).to_have_text(["Role", "hq"])
        edit.get_by_label("plant-1", exact=True).check()
        expect(page.locator("#edit-grant-head th")).to_have_text(["Role", "hq", "plant-1"])
        edit.get_by_label("plant-1", exact=True).uncheck()
        expect(edit.get_by_label("editor at plant-1")).to_have_count(0)
        expect(edit.get_by_label("Metadata name 1")).to_have_value("plan")
        expect(edit.get_by_label("Metadata value 2")).to_have_value("core-7")
        expect(edit.get_by_label("Allowed IPs")).to_have_value("127.0.0.1\n2001:db8::/32")
        edit.get_by_role("button", name="Save changes").click()
        expect(page.locator("#edit-error")).to_contain_text("Nothing changed")
        views(page, "edit-dialog", edit.get_by_role("button", name="Save changes"))

        # Remove a scope: the PATCH carries only that; the proxy refuses the route.
        edit.get_by_label("reports:read", exact=True).uncheck()
        with page.expect_request(lambda r: r.method == "PATCH") as sent:
            edit.get_by_role("button", name="Save changes").click()
        body = sent.value.post_data_json
        check(body == {"scopes": ["items:read"]}, f"the PATCH sends only what changed: {body}")
        expect(edit).to_be_hidden()
        expect(page.locator("#detail-status")).to_contain_text("changed scopes")
        expect(detail_pair(page, "Scopes")).to_have_text("Scopesitems:read")
        proxy_until("/v1/reports", secret, (403, "insufficient_scope"), "the proxy refuses the removed scope")
        check(proxy_get("/v1/items/1", secret) == (200, None), "the kept scope still works")

        # A bad metadata name and a bad address: both at their field, the first focused.
        actions.get_by_role("button", name="Edit").click()
        edit.get_by_role("button", name="Add metadata").click()
        edit.get_by_label("Metadata name 3").fill("Bad_Name")
        edit.get_by_label("Metadata value 3").fill("x")
        edit.get_by_label("Allowed IPs").fill("127.0.0.1\n2001:db8::/32\nnot-an-ip")
        edit.get_by_role("button", name="Save changes").click()
        expect_bad_entries(page, edit, "edit-", "Metadata: `Bad_Name` is not a valid name", 3,
                           "Allowed IPs line 3: `not-an-ip` is not an IP address or CIDR")
        views(page, "edit-errors", edit.get_by_label("Allowed IPs"))

        # The server is the authority: its 400 naming a field lands at that field. The
        # request is rewritten on its way out to carry what the browser did not check.
        edit.get_by_label("Metadata name 3").fill("region")
        edit.get_by_label("Metadata value 3").fill("eu")
        edit.get_by_label("Allowed IPs").fill("127.0.0.1\n\n10.0.0.0/8")
        for field, bad, box, words, focus in (
            ("allowed_ips", lambda b: b["allowed_ips"].__setitem__(1, "2001:db8::/129"), "edit-allowed-ips-error",
             "Allowed IPs line 3: `2001:db8::/129` is not an IP address or CIDR", "edit-allowed-ips"),
            ("metadata", lambda b: b["metadata"].__setitem__("Bad", "x"), "edit-metadata-error",
             "Metadata: `Bad` is not a valid name", None),
        ):
            page.route("**/v1/keys/*", rewriting(bad))
            edit.get_by_role("button", name="Save changes").click()
            expect(page.locator(f"#{box}")).to_contain_text(words)
            if focus:
                check(focused_id(page) == focus, f"the server's {field} error focuses its field")
            else:
                check(focused_label(page) == "Metadata name 1", "the server's metadata error focuses the metadata")
            page.unroute("**/v1/keys/*")
        problems[:] = [p for p in problems if "status of 400" not in p]
        edit.get_by_role("button", name="Save changes").click()
        expect(edit).to_be_hidden()
        expect(detail_pair(page, "Metadata").locator("code")).to_have_text(["plan: gold", "region: eu", "team: core-7"])
        expect(detail_pair(page, "Allowed IPs").locator("code")).to_have_text(["127.0.0.1", "10.0.0.0/8"])

        # The allowlist is enforced: narrowed, this client is refused; emptied, anywhere.
        actions.get_by_role("button", name="Edit").click()
        edit.get_by_label("Allowed IPs").fill("10.0.0.0/8")
        edit.get_by_role("button", name="Save changes").click()
        expect(edit).to_be_hidden()
        proxy_until("/v1/items/1", secret, (403, "ip_forbidden"), "the proxy refuses an address off the allowlist")
        actions.get_by_role("button", name="Edit").click()
        edit.get_by_label("Allowed IPs").fill("")
        edit.get_by_role("button", name="Save changes").click()
        expect(edit).to_be_hidden()
        expect(detail_pair(page, "Allowed IPs")).to_contain_text("anywhere")
        proxy_until("/v1/items/1", secret, (200, None), "an empty allowlist: the key works from anywhere")

        # Revoked: nothing left to edit, suspend or resume.
        actions.get_by_role("button", name="Revoke").click()
        page.locator("#revoke-dialog").get_by_role("button", name="Yes, revoke").click()
        expect(detail_pair(page, "Status")).to_contain_text("revoked")
        expect(actions.get_by_role("button")).to_have_count(0)

        # An admin key may edit a key that holds more than it does (an edit is judged by
        # what it adds), but cannot give what it lacks: the server's 403 names the scope,
        # and the console says it at Scopes; nothing is saved.
        limited = admin_api("POST", "/v1/keys", {
            "name": "limited admin", "user_id": "ops", "business_id": "acme",
            "scopes": ["keygate:admin", "items:read"], "locations": ["hq"], "expires_in": "1d"})["key"]
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Admin token or key").fill(limited)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#who")).to_contain_text("admin key")
        page.get_by_role("link", name="Keys", exact=True).click()
        other = page.locator("#keys-body tr", has_text="billing export")
        other.get_by_role("button", name="Edit").click()
        edit.get_by_label("Description", exact=True).fill("changed by a key without reports:read")
        edit.get_by_role("button", name="Save changes").click()
        expect(edit).to_be_hidden()
        other.get_by_role("button", name="Edit").click()
        edit.get_by_label("items:write", exact=True).check()
        edit.get_by_role("button", name="Save changes").click()
        expect(page.locator("#edit-scopes-error")).to_have_text(
            "Scopes `items:write`: a key cannot grant what it does not hold itself")
        check(focused_id(page) == "edit-scope-0", "the refusal focuses Scopes")
        expect(edit).to_be_visible()
        problems[:] = [p for p in problems if "status of 403" not in p]
        edit.get_by_role("button", name="Cancel").click()
        [billing] = admin_api("GET", "/v1/keys?search=billing")["keys"]
        check(billing["description"] == "changed by a key without reports:read"
              and billing["scopes"] == ["reports:read"],
              f"the narrow edit was saved, the refused one nothing: {billing}")
        browser.close()
    check(not problems, f"no console errors: {problems}")
    print(f"edited key: {key_id}")
    print("edit flow: done")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure with its message
        print(f"edit flow failed: {e!r}", file=sys.stderr)
        sys.exit(1)
