"""Screenshots of every page of the web app, at 1280×800 (a panel PC) and 390×844 (a phone), logged in with a token,
in Debian's Chromium through Playwright: docs/webapp/<page>_<width>.png.

    python benchmarks/webapp_screens.py http://127.0.0.1:8080 TOKEN docs/webapp
(a running `edge-stpm run --config station.toml` with [http] bind and role tokens)"""
from __future__ import annotations

import sys
import time
from pathlib import Path

PAGES = ("login", "live", "history", "review", "recipes", "health", "audit")


def main() -> int:
    from playwright.sync_api import sync_playwright

    base, token, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        for w, h in ((1280, 800), (390, 844)):
            page = b.new_page(viewport={"width": w, "height": h}, device_scale_factor=1, bypass_csp=True)
            page.goto(base + "/app/login")
            page.screenshot(path=str(out / f"login_{w}.png"))
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url("**/app/live")
            for name in PAGES[1:]:
                page.goto(f"{base}/app/{name}")
                page.wait_for_load_state("networkidle") if name not in ("live", "health") else time.sleep(2.5)
                time.sleep(1.0)
                # the whole page where it is short (the feedback card, the drift table); long lists as seen
                page.screenshot(path=str(out / f"{name}_{w}.png"), full_page=name in ("recipes", "health"))
            page.close()
        b.close()
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
