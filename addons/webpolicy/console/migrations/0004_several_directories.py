"""Several gateways' log directories in one console (issue #19).

Ingest state is keyed by directory and file name (two gateways both write
safeguarding-2026-12-07.jsonl), and each event remembers the directory it came from, so a
closed case's review goes beside its own log.  Rows from before this migration have no
directory (""/NULL); the next ingest adopts them into the directory they came from
(ingest.py, _adopt_legacy): a migration cannot know where the log was.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('console', '0003_review_requests'),
    ]

    operations = [
        migrations.AddField(
            model_name='event',
            name='source_dir',
            field=models.CharField(blank=True, max_length=1024, null=True),
        ),
        migrations.AlterField(
            model_name='ingeststate',
            name='name',
            field=models.CharField(max_length=64),
        ),
        migrations.AddField(
            model_name='ingeststate',
            name='directory',
            field=models.CharField(default='', max_length=1024),
        ),
        migrations.AddConstraint(
            model_name='ingeststate',
            constraint=models.UniqueConstraint(fields=('directory', 'name'), name='ingest_state_directory_name'),
        ),
    ]
