"""Path traversal: no URL, and no reference in lab or doc content, reads or serves a file outside the
content directory (or the collected static files). Secret files wait next to the content directory
(tests/hostile/hostile_content.write_secrets); /etc/passwd stands for the rest of the host."""

from __future__ import annotations

import pytest
import yaml
from django.test import Client
from pytest_django import Settings

from labs.services.catalog import catalog
from tests.access_matrix import People, client_for
from tests.hostile.hostile_content import DOC, SECRET, content_of, same_site_links

pytestmark = pytest.mark.django_db
PASSWD = b"root:x:0:0"

TRAVERSALS = [
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%5c..%5c..%5cetc%5cpasswd",
    "/static/....//....//....//etc/passwd",
    "/static/%252e%252e/%252e%252e/etc/passwd",
    "/static/kb/..%2f..%2f..%2fportal%2fsettings.py",
    "/docs/img/..%2fsecret.svg",
    "/docs/img/..%2f..%2f..%2fsecret.svg",
    "/docs/img/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.svg",
    "/docs/img/../../../secret.svg",
    "/docs/img/..%5c..%5c..%5csecret.svg",
    "/docs/img/secret.svg%00.png",
    "/docs/en/..%2f..%2f..%2fsecret/",
    "/docs/en/../../../secret/",
    "/docs/..%2f..%2f..%2fetc%2fpasswd/",
    "/docs/search/?q=../../../etc/passwd&lang=../../etc",
    "/labs/..%2f..%2f..%2fetc%2fpasswd/",
    "/labs/%2e%2e%2f%2e%2e%2fsecret/",
    "/api/sessions/..%2f..%2f..%2fetc%2fpasswd",
    "/api/labs/../../../etc/passwd",
    "/ws/sessions/..%2f..%2fetc%2fpasswd/terminal/",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_no_url_reaches_a_file_outside(url: str, hostile_world: str) -> None:
    resp = Client().get(url)
    body = content_of(resp)
    assert SECRET.encode() not in body
    assert PASSWD not in body
    assert resp.status_code in (400, 404), f"{url}: {resp.status_code}"


def test_an_image_link_out_of_the_content_is_not_served(hostile_world: str, settings: Settings) -> None:
    # A symlink in content/docs/img pointing outside the content directory (a careless or hostile
    # commit): the image URL serves only what really lies in docs/img.
    img = settings.CONTENT_DIR / "docs" / "img"
    img.mkdir(exist_ok=True)
    (img / "inside.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (img / "leak.svg").symlink_to(settings.CONTENT_DIR.parent / "secret.svg")
    assert Client().get("/docs/img/inside.svg").status_code == 200
    resp = Client().get("/docs/img/leak.svg")
    assert SECRET.encode() not in content_of(resp)
    assert resp.status_code == 404


@pytest.mark.parametrize("page", [f"/docs/en/{DOC}/", f"/docs/zh/{DOC}/", "/labs/{lab}/"])
def test_content_references_never_reach_outside(page: str, hostile_world: str, people: People) -> None:
    # The content links ../../secret.txt, img/../../secret.svg, /etc/passwd, file:///etc/passwd and
    # includes --8<-- "../secret.txt": the build reads none of them and no link serves them.
    client = client_for(people.alice)
    url = page.replace("{lab}", hostile_world)
    html = client.get(url).content.decode()
    assert SECRET not in html
    assert "file:" not in html
    links = same_site_links(html, url)
    assert any("secret" in link for link in links), (
        "the page links the secret files (relatively), else nothing is tested"
    )
    for link in sorted(links):
        resp = client.get(link)
        body = content_of(resp)
        assert SECRET.encode() not in body, link
        assert PASSWD not in body, link


def test_a_lab_naming_steps_outside_its_folder_is_not_offered(lab_world: str, settings: Settings) -> None:
    outside = settings.CONTENT_DIR.parent / "outside"
    (outside / "steps").mkdir(parents=True)
    (outside / "steps" / "en.md").write_text(SECRET)
    lab = settings.CONTENT_DIR / "labs" / "escape"
    meta = yaml.safe_load((settings.CONTENT_DIR / "labs" / lab_world / "lab.yaml").read_text())
    meta.update(slug="escape", steps=["../../../outside/steps"], docs=["../../outside"])
    lab.mkdir()
    (lab / "lab.yaml").write_text(yaml.safe_dump(meta))
    found = catalog()
    assert found.get("escape") is None
    problems = " ".join(str(p) for p in found.errors)
    assert "steps[0]" in problems
    assert "docs[0]" in problems
    assert SECRET not in problems
    assert SECRET not in Client().get("/labs/").content.decode()
