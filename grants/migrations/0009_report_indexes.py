import django.db.models.functions.comparison
from django.db import migrations, models

# The reports' period filter ("existed at some time in the period") is a
# range overlap; on PostgreSQL a GiST index on the grant's range answers it
# without reading every grant. The query (audit/filters.py) must use the same
# expression. SQLite (demo mode) filters without it.
FORWARD = "CREATE INDEX grants_grant_period ON grants_grant USING gist (tstzrange(created_at, window_end, '[]'))"
BACKWARD = "DROP INDEX IF EXISTS grants_grant_period"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('grants', '0008_grant_reminded_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='grant',
            name='window_end',
            field=models.GeneratedField(db_persist=True, expression=models.Case(models.When(status='failed', then=models.F('created_at')), models.When(then=django.db.models.functions.comparison.Greatest('verified_at', 'created_at'), verified_at__isnull=False), models.When(revoked_at__isnull=False, then=django.db.models.functions.comparison.Greatest('revoked_at', 'created_at')), default=None), output_field=models.DateTimeField(blank=True, null=True)),
        ),
        migrations.AddIndex(
            model_name='grant',
            index=models.Index(fields=['created_at', 'id'], include=['window_end'], name='grants_grant_created_id'),
        ),
        migrations.AddIndex(
            model_name='accessrequest',
            index=models.Index(fields=['decided_at', 'id'], name='grants_request_decided_id'),
        ),
        migrations.RunPython(forward, backward),
    ]
