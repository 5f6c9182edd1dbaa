"""The instructor's live grid in Debian's chromium while a learner works on a real VM: a failed check
shows up in the grid with its reason (and in what the class is stuck on), the instructor watches
the terminal (the learner's page says so), sends a message (shown as text on the learner's page),
and the pass moves the learner on. Screenshots at laptop and phone widths, in both languages,
light and dark, and in large type, saved to test-artifacts/ to be looked at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests import lab_stack

pytestmark = [pytest.mark.browser, pytest.mark.vm, pytest.mark.slow]
LAPTOP, PHONE = {"width": 1400, "height": 900}, {"width": 390, "height": 844}
# The instructor bob's class: alice's running session is her seat; carl holds a seat with no VM
# yet, dina waits for one (the grid shows every kind of row).
MAKE_CLASS = """
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from classes.models import LabClass, Seat
from labs.models import LabSession
from portal.roles import INSTRUCTOR, grant_role
bob, alice = User.objects.get(username="bob"), User.objects.get(username="alice")
grant_role(bob, INSTRUCTOR)
now = timezone.now()
klass = LabClass.objects.create(title="Workshop: VFIO", owner=bob, labs=[{slug!r}], seats=2, starts_at=now,
                                ends_at=now + timedelta(hours=1))
session = LabSession.objects.get(pk={sid!r})
seat = Seat.objects.create(klass=klass, user=alice, session=session)
seat.sessions.add(session)
Seat.objects.create(klass=klass, user=User.objects.create_user("carl"))
Seat.objects.create(klass=klass, user=User.objects.create_user("dina"), waiting=True)
print(klass.pk)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    with lab_stack.lab_stack(tmp_path_factory.mktemp("gridlab"), LABS_TTL_S="600") as running:
        yield running


def logged_in(browser: Browser, base: str, user: str, lang: str = "en", dark: bool = False,
              viewport: dict[str, int] = LAPTOP) -> tuple[BrowserContext, Page]:  # fmt: skip
    ctx = browser.new_context(viewport=viewport, color_scheme="dark" if dark else "light")  # type: ignore[arg-type]
    ctx.add_cookies([{"name": "django_language", "value": lang, "url": base}])
    page = ctx.new_page()
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", user)
    page.fill("#id_password", lab_stack.STACK_PASSWORD)
    page.locator("form button[type=submit]").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    return ctx, page


def test_the_grid_follows_a_learner_and_the_instructor_watches_and_messages(
    stack: lab_stack.LabStack, browser: Browser, artifacts: Path
) -> None:
    api = stack.client("alice")
    status, session = api.request("POST", "/api/sessions", {"lab": stack.slug})
    assert status == 201, session
    sid = session["id"]
    lab_stack.wait_for_state(api, sid, {"ready"}, 180)
    class_id = int(stack.shell(MAKE_CLASS.format(slug=stack.slug, sid=sid)).split()[-1])
    live = f"{stack.base}/classes/{class_id}/live"

    teacher_ctx, grid = logged_in(browser, stack.base, "bob")
    learner_ctx, lab = logged_in(browser, stack.base, "alice")
    grid.goto(live)
    alice_row = grid.locator('tr:has(.learner-name:text-is("alice"))')
    first = alice_row.locator('td[data-step="1"]')
    expect(first).to_have_attribute("data-state", "working")
    expect(grid.locator("[data-status]")).to_have_text("live")
    expect(grid.locator('tr:has(.learner-name:text-is("carl")) .learner-note')).to_have_text("No VM yet")
    expect(grid.locator('tr:has(.learner-name:text-is("dina")) .learner-note')).to_have_text("Waiting for a seat")

    # The learner checks too early: the instructor's cell turns failed, with the check's reason.
    lab.goto(f"{stack.base}/labs/{stack.slug}/")
    expect(lab.locator("[data-state-badge]")).to_have_text("Ready", timeout=30_000)
    lab.locator('[data-action="check"][data-step="1"]').click()
    expect(first).to_have_attribute("data-state", "failed", timeout=60_000)
    expect(first.locator(".cell-reason")).to_have_text("/root/hello.txt exists: not yet")
    expect(grid.locator(".reason-group")).to_contain_text("1 learner:")
    expect(grid.locator(".reason-group")).to_contain_text("/root/hello.txt exists: not yet")

    # Watching: the instructor sees the terminal; the learner's page says someone is watching.
    alice_row.locator('[data-action="watch"]').click()
    watch = grid.locator("[data-watch]")
    expect(watch).to_be_visible()
    expect(lab.locator("[data-watching]")).to_be_visible(timeout=10_000)
    lab.locator(".xterm").click()
    lab.keyboard.type("echo hi > /root/hello.txt; echo so$((20+22))lved")
    lab.keyboard.press("Enter")
    expect(watch.locator(".xterm-rows")).to_contain_text("so42lved", timeout=20_000)
    lab.screenshot(path=str(artifacts / "classes-learner-watched.png"), full_page=False)
    grid.screenshot(path=str(artifacts / "classes-grid-watching.png"), full_page=True)
    grid.locator('[data-action="unwatch"]').click()
    expect(lab.locator("[data-watching]")).to_be_hidden(timeout=10_000)

    # A message: sent from the grid, shown on the learner's page at once, as text (never HTML).
    alice_row.locator('[data-action="message-seat"]').click()
    grid.locator("[data-message-text]").fill("Now check again <b>please</b>")
    grid.locator("[data-message-form] button[type=submit]").click()
    expect(grid.locator("[data-message-dialog]")).to_be_hidden()
    message = lab.locator("[data-message-list] li").first
    expect(message).to_contain_text("Now check again <b>please</b>", timeout=10_000)
    assert lab.locator("[data-message-list] b").count() == 0
    lab.screenshot(path=str(artifacts / "classes-learner-message.png"), full_page=False)

    # The pass: step 1 passed, step 2 under way; the reason is gone from what the class is stuck on.
    lab.locator('[data-action="check"][data-step="1"]').click()
    expect(first).to_have_attribute("data-state", "passed", timeout=60_000)
    expect(alice_row.locator('td[data-step="2"]')).to_have_attribute("data-state", "working")
    expect(grid.locator(".reason-none")).to_be_visible()

    # Filters: by name, and by state on a step.
    grid.locator('[data-filter="name"]').fill("car")
    expect(grid.locator("[data-rows] tr")).to_have_count(1)
    grid.locator('[data-filter="name"]').fill("")
    grid.locator('[data-filter="step"]').select_option("1")
    grid.locator('[data-filter="state"]').select_option("passed")
    expect(grid.locator("[data-rows] tr")).to_have_count(1)
    grid.locator('[data-filter="state"]').select_option("")
    grid.locator('[data-filter="step"]').select_option("")
    # A seat action through the classes API, confirmed first: more time for alice's seat.
    alice_row.locator('[data-action="select"]').check()
    expect(grid.locator("[data-seat-actions]")).to_be_visible()
    expect(grid.locator("[data-selected-count]")).to_have_text("1 selected")
    grid.once("dialog", lambda dialog: dialog.accept())
    grid.locator('[data-action="seats-extend"]').click()
    expect(grid.locator("[data-status]")).to_have_text("Done for 1 seat(s).", timeout=10_000)
    expect(grid.locator("[data-seat-actions]")).to_be_hidden()
    # A learner joins while the grid is open: their row appears at once; when they leave, it goes.
    erin = 'tr:has(.learner-name:text-is("erin"))'
    seat_of_erin = stack.shell(
        "from django.contrib.auth.models import User; from classes import joining; from classes.models import Invite\n"
        f"code = Invite.objects.create(klass_id={class_id}, created_by=User.objects.get(username='bob')).code\n"
        "print(joining.join(User.objects.create_user('erin'), code).pk)"
    ).split()[-1]
    expect(grid.locator(erin)).to_be_visible(timeout=10_000)
    expect(grid.locator(f"{erin} .learner-note")).to_have_text("Waiting for a seat")  # 2 seats, both taken
    grid.screenshot(path=str(artifacts / "classes-grid-joined-live.png"), full_page=True)
    stack.shell(f"from classes import seats, models; seats.leave_class(models.Seat.objects.get(pk={seat_of_erin}))")
    expect(grid.locator(erin)).to_have_count(0, timeout=10_000)
    grid.screenshot(path=str(artifacts / "classes-grid-en-light.png"), full_page=True)
    grid.locator('[data-action="projector"]').click()
    grid.screenshot(path=str(artifacts / "classes-grid-projector.png"), full_page=True)
    grid.locator('[data-action="projector"]').click()
    lab.reload()  # a reload still shows the message (replayed when the page's socket connects)
    expect(lab.locator("[data-message-list] li").first).to_contain_text("Now check again", timeout=10_000)
    teacher_ctx.close()
    learner_ctx.close()

    # Both languages, light and dark, laptop and phone: the same grid, readable.
    for lang, dark, viewport, name in [
        ("en", True, LAPTOP, "en-dark"), ("zh-hans", False, LAPTOP, "zh-light"), ("zh-hans", True, LAPTOP, "zh-dark"),
        ("en", False, PHONE, "en-phone"), ("zh-hans", True, PHONE, "zh-phone-dark"),
    ]:  # fmt: skip
        ctx, page = logged_in(browser, stack.base, "bob", lang=lang, dark=dark, viewport=viewport)
        page.goto(live)
        expect(page.locator('tr:has(.learner-name:text-is("alice")) td[data-step="1"]')).to_have_attribute(
            "data-state", "passed")  # fmt: skip
        expect(page.locator("[data-status]")).not_to_be_empty()
        if lang == "zh-hans":
            expect(page.locator(".cell.is-passed .cell-state").first).to_have_text("✓ 已通过")
        page.screenshot(path=str(artifacts / f"classes-grid-{name}.png"), full_page=True)
        ctx.close()
