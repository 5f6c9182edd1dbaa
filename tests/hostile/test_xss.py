"""XSS: hostile text through every form field, every query parameter, and lab and doc content (built
by the project's own build) comes out as text: no script, event handler, javascript: URL, frame,
refresh or evaluated template syntax in any page, and redirects never leave the site."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client

from labs.models import LabSession, StepResult
from tests.access_matrix import People, client_for
from tests.hostile.hostile_content import ATTACK, DOC, LINE, MARK, PAYLOADS, assert_inert, executable_markup
from tests.labs.test_access_matrix import HTTP_ROWS, fill

pytestmark = pytest.mark.django_db
WHO = ["anonymous", "learner"]


def visitor(who: str, people: People) -> Client:
    return client_for(people.alice if who == "learner" else None)


# --- The check itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        f"<p><script>{ATTACK}</script></p>",
        f'<img src="x" onerror="{ATTACK}">',
        f'<a href=" jav&#x09;ascript:{ATTACK}">x</a>',
        f'<iframe src="https://example.org/{MARK}"></iframe>',
        f'<script type="application/json">{{"a": "</script><script>{ATTACK}</script>"}}</script>',
        f"<p>{MARK.upper()}</p>",
    ],
)
def test_the_check_sees_executable_markup(html: str) -> None:
    assert executable_markup(f"<html><body>{html}</body></html>") != []


def test_the_check_passes_escaped_text() -> None:
    assert executable_markup(f"<p>&lt;script&gt;{ATTACK}&lt;/script&gt; javascript:{ATTACK}</p>") == []


# --- Content: labs and docs -------------------------------------------------------------------------

CONTENT_PAGES = [
    "/labs/",
    "/labs/{lab}/",
    "/docs/",
    f"/docs/en/{DOC}/",
    f"/docs/zh/{DOC}/",
    "/docs/glossary/",
    f"/docs/search/?q={MARK}",
    "/docs/search/?q=alert&partial=1",
    "/docs/search/?q=script&lang=zh",
    "/",
]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("page", CONTENT_PAGES)
def test_hostile_content_is_shown_as_text(page: str, who: str, hostile_world: str, people: People) -> None:
    resp = visitor(who, people).get(fill(page, {"lab": hostile_world}))
    assert resp.status_code == 200
    html = resp.content.decode()
    assert_inert(html, page)
    if page != "/":
        assert MARK in html, "the hostile text is on the page (as text), else this test proves nothing"


def test_search_finds_the_hostile_page(hostile_world: str) -> None:
    html = Client().get("/docs/search/", {"q": "alert"}).content.decode()
    assert f"/docs/en/{DOC}/" in html


def test_check_results_from_the_guest_stay_text_on_the_lab_page(hostile_world: str, session: LabSession,
                                                                 people: People) -> None:  # fmt: skip
    # A check's output comes from the guest, where the learner is root: it is hostile input too.
    verdict = {"ok": False, "en": LINE, "zh": LINE, "detail": f"</script><script>{ATTACK}</script>"}
    StepResult.objects.create(session=session, step=1, passed=False, message=LINE, details=[verdict])
    html = client_for(people.alice).get(f"/labs/{hostile_world}/").content.decode()
    assert_inert(html, "lab page with a hostile check result")
    assert "lab-session" in html
    assert MARK in html


# --- Forms ------------------------------------------------------------------------------------------

QUOTED_EMAIL = f'"<script>{ATTACK}</script>"@example.com'  # a valid address (a quoted local part)


def form_cases() -> list[Any]:
    cases = []
    for i, p in enumerate(PAYLOADS):
        cases += [
            pytest.param("anonymous", "/accounts/signup/", {"username": p, "email": p, "password1": "a",
                                                            "password2": "b"}, id=f"signup-{i}"),
            pytest.param("anonymous", "/accounts/login/", {"username": p, "password": p}, id=f"login-{i}"),
            pytest.param("anonymous", "/accounts/password_reset/", {"email": p}, id=f"reset-{i}"),
            pytest.param("learner", "/accounts/password_change/", {"old_password": p, "new_password1": p,
                                                                   "new_password2": p + "x"}, id=f"change-{i}"),
            pytest.param("anonymous", "/accounts/reset/MQ/set-password/", {"new_password1": p,
                                                                           "new_password2": p}, id=f"confirm-{i}"),
        ]  # fmt: skip
    cases.append(pytest.param("anonymous", "/accounts/password_reset/", {"email": QUOTED_EMAIL}, id="reset-quoted"))
    return cases


@pytest.mark.parametrize(("who", "url", "data"), form_cases())
def test_form_fields_are_echoed_as_text(who: str, url: str, data: dict[str, str], lab_world: str,
                                        people: People) -> None:  # fmt: skip
    resp = visitor(who, people).post(url, data, follow=True)
    assert resp.status_code in (200, 400, 429), resp.status_code
    assert_inert(resp.content.decode(), f"{url} after posting {data}")


def test_an_address_with_markup_signs_up_and_stays_text(lab_world: str) -> None:
    client = Client()
    password = "correct-horse-battery"
    resp = client.post("/accounts/signup/", {"username": "mallory", "email": QUOTED_EMAIL, "password1": password,
                                             "password2": password})  # fmt: skip
    assert resp.status_code == 302, "the quoted address is a valid one"
    assert User.objects.filter(username="mallory").exists()
    for page in ("/", "/accounts/profile/"):
        html = client.get(page).content.decode()
        assert_inert(html, page)
    assert MARK in client.get("/accounts/profile/").content.decode(), "the address is on the profile, as text"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_language_switch_takes_no_markup(payload: str, lab_world: str) -> None:
    resp = Client().post("/i18n/setlang/", {"language": payload, "next": payload}, follow=True)
    assert_inert(resp.content.decode(), "after switching language")


# --- Every query parameter of every page --------------------------------------------------------------

PAGES = sorted(
    {path for method, path, *_ in HTTP_ROWS if method == "GET" and not path.startswith(("/admin/", "/api/"))}
    | {"/admin/login/", "/api/docs"}
)
PARAMETERS = ["q", "lang", "section", "next", "partial", "page", "x"]


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("page", PAGES)
def test_query_parameters_are_echoed_as_text(page: str, who: str, hostile_world: str, session: LabSession,
                                             people: People) -> None:  # fmt: skip
    client = visitor(who, people)
    url = fill(page, {"lab": hostile_world, "doc": DOC, "session": session.id, "user": str(people.alice.pk)})
    for payload in PAYLOADS:
        query = urlencode(dict.fromkeys(PARAMETERS, payload))
        resp = client.get(f"{url}?{query}", follow=True)  # a redirect to log in carries them in `next`
        for location, _status in resp.redirect_chain:
            assert_redirect_stays_on_site(location)
        assert_inert(resp.content.decode(errors="replace"), f"{url}?{query}")


# --- Redirects ----------------------------------------------------------------------------------------

OFF_SITE = [f"javascript:{ATTACK}", "//evil.example/", "https://evil.example/", "/\\evil.example/", "\\\\evil.example"]


def assert_redirect_stays_on_site(location: str) -> None:
    url = urlsplit(location)
    assert not url.scheme, f"redirect off the site: {location!r}"
    assert not url.netloc, f"redirect off the site: {location!r}"
    assert location.startswith("/"), location
    assert not location.startswith(("//", "/\\")), location


@pytest.mark.parametrize("target", OFF_SITE)
def test_log_in_never_redirects_off_site(target: str, lab_world: str, people: People) -> None:
    password = "correct-horse-battery-staple"  # tests/conftest.py's
    resp = Client().post(f"/accounts/login/?{urlencode({'next': target})}",
                         {"username": people.bob.username, "password": password, "next": target})  # fmt: skip
    assert resp.status_code == 302, "logged in"
    assert_redirect_stays_on_site(resp["Location"])


@pytest.mark.parametrize("target", OFF_SITE)
@pytest.mark.parametrize("url", ["/accounts/logout/", "/i18n/setlang/"])
def test_log_out_and_language_switch_never_redirect_off_site(url: str, target: str, lab_world: str,
                                                             people: People) -> None:  # fmt: skip
    resp = client_for(people.bob).post(f"{url}?{urlencode({'next': target})}", {"next": target, "language": "zh-hans"})
    assert resp.status_code == 302
    assert_redirect_stays_on_site(resp["Location"])
