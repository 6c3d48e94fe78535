from django.db import migrations

# The row triggers of 0002 do not fire for TRUNCATE, which empties the table
# in one statement: a statement-level trigger refuses it too. Only a
# superuser (session_replication_role = replica) or the table's owner
# (ALTER TABLE ... DISABLE TRIGGER) can get past it, which is why the portal
# runs as a role that owns nothing (README, "The audit trail"), and the
# signed heads show what they did. SQLite (demo mode) has no TRUNCATE.
FORWARD = """
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();
"""
BACKWARD = "DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_no_forks_and_head_schedule")]
    operations = [migrations.RunPython(forward, backward)]
