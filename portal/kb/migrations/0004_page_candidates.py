"""A page-level candidate stage for search (#14): the best pages are found first, then only their
sections are ranked. kb_search_term holds, for each page and indexed term, what the term alone
scores in the page, in a btree read best first; on SQLite, section rows also carry a page tag.

The index is emptied; the next `docs build` indexes every page again (no page is rendered again)."""

from django.db import migrations

TERMS = """CREATE TABLE kb_search_term (
    page_id bigint NOT NULL, lang varchar(5) NOT NULL, kind varchar(3) NOT NULL,
    section varchar(40) NOT NULL, term text {collate} NOT NULL, impact real NOT NULL)"""
INDEXES = [
    "CREATE INDEX kb_search_term_best ON kb_search_term (lang, term, impact DESC, page_id)",
    "CREATE INDEX kb_search_term_page ON kb_search_term (page_id)",
]


def create(apps, schema_editor):
    # "C": byte order, so that a prefix is a range of terms (SQLite's default collation is binary).
    postgres = schema_editor.connection.vendor == "postgresql"
    schema_editor.execute("DROP TABLE IF EXISTS kb_search_term")
    schema_editor.execute(TERMS.format(collate='COLLATE "C"' if postgres else ""))
    for sql in INDEXES:
        schema_editor.execute(sql)
    schema_editor.execute("DELETE FROM kb_search")
    schema_editor.execute("DELETE FROM kb_searchpage")


def drop(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS kb_search_term")
    schema_editor.execute("DELETE FROM kb_search")
    schema_editor.execute("DELETE FROM kb_searchpage")


class Migration(migrations.Migration):
    dependencies = [("kb", "0003_section_index")]
    operations = [migrations.RunPython(create, drop)]
