from django.db import migrations


def create(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="jitportal: reconcile targets",
        defaults={"func": "grants.reconcile.reconcile_all", "schedule_type": "I", "minutes": 10, "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="jitportal: reconcile targets").delete()


class Migration(migrations.Migration):
    dependencies = [("grants", "0005_drift")]
    operations = [migrations.RunPython(create, remove)]
