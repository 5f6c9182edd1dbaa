"""The search index table: an FTS5 virtual table on SQLite, a tsvector column with GIN on PostgreSQL."""

from django.db import migrations

SQLITE = [
    """CREATE VIRTUAL TABLE kb_search USING fts5(
        title, headings, body, lang UNINDEXED, slug UNINDEXED, section UNINDEXED,
        tokenize = 'porter unicode61 remove_diacritics 2')""",
]
POSTGRES = [
    """CREATE TABLE kb_search (
        id bigserial PRIMARY KEY, lang varchar(5) NOT NULL, slug varchar(100) NOT NULL,
        section varchar(40) NOT NULL, tsv tsvector NOT NULL, UNIQUE (lang, slug))""",
    "CREATE INDEX kb_search_tsv ON kb_search USING GIN (tsv)",
]


def create(apps, schema_editor):
    statements = POSTGRES if schema_editor.connection.vendor == "postgresql" else SQLITE
    for sql in statements:
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS kb_search")


class Migration(migrations.Migration):
    dependencies = [("kb", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
