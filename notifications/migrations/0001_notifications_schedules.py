"""Move the schedules of the old task names (grants.notify.*, retries of failed messages) to the notifications app's.

The old names keep working for one release (grants/notify.py); this makes
the schedules independent of them before that module goes.
"""

from django.db import migrations

OLD = "grants.notify."
# Where each old name lives now; every other one is the task of the same name in notifications.tasks.
MOVED = {"deliver": "notifications.delivery.deliver"}
TASKS = "notifications.tasks."


def move_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for row in Schedule.objects.filter(func__startswith=OLD):
        name = row.func.removeprefix(OLD)
        row.func = MOVED.get(name, TASKS + name)
        row.save(update_fields=["func"])


def move_schedules_back(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    back = {new: OLD + name for name, new in MOVED.items()}
    for row in Schedule.objects.filter(func__startswith="notifications."):
        if row.func in back:
            row.func = back[row.func]
        elif row.func.startswith(TASKS):
            row.func = OLD + row.func.removeprefix(TASKS)
        else:
            continue
        row.save(update_fields=["func"])


class Migration(migrations.Migration):
    dependencies = [
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(move_schedules, move_schedules_back)]
