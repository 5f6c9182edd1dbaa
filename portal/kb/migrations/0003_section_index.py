"""The search index by section: one row per doc section or lab step, keyed by SearchPage.

The old page-level table is dropped; `docs build` (RENDERER_VERSION 6) fills the new one."""

from django.db import migrations, models

SQLITE = [
    # rowid = page id * 1024 + position. `tags` holds filter words (kind, language, section) so that
    # filters are part of the MATCH and never read stored columns row by row.
    """CREATE VIRTUAL TABLE kb_search USING fts5(
        title, heading, body, tags, anchor UNINDEXED, heading_text UNINDEXED, body_text UNINDEXED,
        tokenize = 'porter unicode61 remove_diacritics 2')""",
]
POSTGRES = [
    """CREATE TABLE kb_search (
        id bigint PRIMARY KEY, page_id bigint NOT NULL, kind varchar(3) NOT NULL, lang varchar(5) NOT NULL,
        section varchar(40) NOT NULL, anchor varchar(200) NOT NULL, heading_text text NOT NULL,
        body_text text NOT NULL, tsv tsvector NOT NULL)""",
    "CREATE INDEX kb_search_tsv ON kb_search USING GIN (tsv)",
    "CREATE INDEX kb_search_page ON kb_search (page_id)",
]


def create(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS kb_search")
    for sql in POSTGRES if schema_editor.connection.vendor == "postgresql" else SQLITE:
        schema_editor.execute(sql)


def drop(apps, schema_editor):
    schema_editor.execute("DROP TABLE IF EXISTS kb_search")


class Migration(migrations.Migration):
    dependencies = [("kb", "0002_search_index")]
    operations = [
        migrations.AddField(model_name="docpage", name="anchors", field=models.JSONField(default=list)),
        migrations.CreateModel(
            name="SearchPage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("doc", "Doc"), ("lab", "Lab")], max_length=3)),
                ("lang", models.CharField(max_length=5)),
                ("slug", models.SlugField(max_length=100)),
                ("section", models.CharField(blank=True, max_length=40)),
                ("title", models.CharField(max_length=300)),
                ("summary", models.TextField(blank=True)),
                ("content_hash", models.CharField(blank=True, max_length=64)),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("kind", "lang", "slug"), name="kb_searchpage_key")]
            },
        ),
        migrations.RunPython(create, drop),
    ]
