from django.db import migrations, models


def create(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="jitportal: export audit head",
        defaults={"func": "audit.log.export_head", "schedule_type": "H", "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="jitportal: export audit head").delete()


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only"), ("django_q", "0018_task_success_index")]
    operations = [
        # Two events naming the same predecessor would be a fork: the
        # database refuses it even if the append lock were ever bypassed.
        migrations.AlterField("auditevent", "prev_hash", models.CharField(max_length=64, unique=True)),
        migrations.RunPython(create, remove),
    ]
