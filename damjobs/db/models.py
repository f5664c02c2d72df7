"""peewee models of the DAM tables that the jobs read and write.

These classes describe the current schema. The tables themselves are created and changed
only by the numbered migrations in `damjobs.db.migrations`; a test checks that both agree.
Times are naive UTC datetimes taken from the database server's clock.
"""

import peewee

database_proxy = peewee.DatabaseProxy()

ENTRY_STATES = ("expected", "built", "failed", "obsolete")
JOB_STATES = (
    "enqueued",
    "running",
    "succeeded",
    "succeeded_with_failures",
    "failed",
    "cancelled",
)
FINISHED_JOB_STATES = JOB_STATES[2:]


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Folder(BaseModel):
    """A folder of the DAM's virtual tree."""

    id = peewee.AutoField()
    parent = peewee.ForeignKeyField(
        "self", null=True, backref="children", on_delete="CASCADE"
    )
    name = peewee.CharField(max_length=255)
    created_at = peewee.DateTimeField()

    class Meta:
        indexes = ((("parent", "name"), True),)


class File(BaseModel):
    """An original file; `path` is relative to the originals root."""

    id = peewee.AutoField()
    folder = peewee.ForeignKeyField(Folder, backref="files", on_delete="CASCADE")
    name = peewee.CharField(max_length=255)
    path = peewee.CharField(max_length=700, unique=True)
    extension = peewee.CharField(max_length=32)
    format = peewee.CharField(max_length=16, index=True)
    media_type = peewee.CharField(max_length=100)
    size_bytes = peewee.BigIntegerField()
    width = peewee.IntegerField(null=True)
    height = peewee.IntegerField(null=True)
    checksum = peewee.CharField(max_length=64)
    is_transformable = peewee.BooleanField(default=False)
    version = peewee.IntegerField(default=1)
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField(index=True)


class FileDescription(BaseModel):
    """A localised, searchable description of a file, one per language."""

    id = peewee.AutoField()
    file = peewee.ForeignKeyField(File, backref="descriptions", on_delete="CASCADE")
    language = peewee.CharField(max_length=16)
    text = peewee.TextField()

    class Meta:
        indexes = ((("file", "language"), True),)


class Tag(BaseModel):
    """A label that can be put on files."""

    id = peewee.AutoField()
    name = peewee.CharField(max_length=255, unique=True)


class FileTag(BaseModel):
    file = peewee.ForeignKeyField(File, backref="file_tags", on_delete="CASCADE")
    tag = peewee.ForeignKeyField(Tag, backref="file_tags", on_delete="CASCADE")

    class Meta:
        primary_key = peewee.CompositeKey("file", "tag")


class Attribute(BaseModel):
    """A key/value pair on a file: `kind` is "exif" (read at import) or "user"."""

    id = peewee.AutoField()
    file = peewee.ForeignKeyField(File, backref="attributes", on_delete="CASCADE")
    kind = peewee.CharField(max_length=8)
    name = peewee.CharField(max_length=191)
    value = peewee.TextField()

    class Meta:
        indexes = ((("file", "kind", "name"), True),)


class Cropping(BaseModel):
    """A named rectangle of one file, in pixels of the auto-oriented image."""

    id = peewee.AutoField()
    file = peewee.ForeignKeyField(File, backref="croppings", on_delete="CASCADE")
    name = peewee.CharField(max_length=191)
    x = peewee.IntegerField()
    y = peewee.IntegerField()
    width = peewee.IntegerField()
    height = peewee.IntegerField()
    auto_cache = peewee.BooleanField(default=False, index=True)
    version = peewee.IntegerField(default=1)
    updated_at = peewee.DateTimeField()

    class Meta:
        indexes = ((("file", "name"), True),)


class PredefinedSetting(BaseModel):
    """A system-wide named chain of transformation steps with an output format."""

    id = peewee.AutoField()
    name = peewee.CharField(max_length=191, unique=True)
    output_format = peewee.CharField(max_length=8, null=True)
    ttl_days = peewee.IntegerField(null=True)
    auto_cache = peewee.BooleanField(default=False, index=True)
    version = peewee.IntegerField(default=1)
    updated_at = peewee.DateTimeField()

    # SettingStep.setting adds this backref when its class is defined, so the annotation
    # exists only for the type checker.
    steps: "peewee.ModelSelect[SettingStep]"


class SettingStep(BaseModel):
    """One step of a predefined setting; `params` is a JSON object."""

    id = peewee.AutoField()
    setting = peewee.ForeignKeyField(
        PredefinedSetting, backref="steps", on_delete="CASCADE"
    )
    position = peewee.IntegerField()
    kind = peewee.CharField(max_length=16)
    params = peewee.TextField()

    class Meta:
        indexes = ((("setting", "position"), True),)


class CustomTransformation(BaseModel):
    """An ad-hoc transformation that a live request asked for; not permanent."""

    id = peewee.AutoField()
    file = peewee.ForeignKeyField(
        File, backref="custom_transformations", on_delete="CASCADE"
    )
    params = peewee.TextField()
    output_format = peewee.CharField(max_length=8)
    created_at = peewee.DateTimeField()
    last_requested_at = peewee.DateTimeField(index=True)


class CacheEntry(BaseModel):
    """
    One cached file that should exist: the data basis of build-missing.

    The identity is (file, cropping or 0, setting or 0, custom transformation or 0,
    output format). The version columns record what the planned or built file derives
    from; `path` is relative to the cache root.
    """

    id = peewee.AutoField()
    file_id = peewee.IntegerField()
    cropping_id = peewee.IntegerField(default=0)
    setting_id = peewee.IntegerField(default=0)
    custom_id = peewee.IntegerField(default=0)
    output_format = peewee.CharField(max_length=16)
    state = peewee.CharField(max_length=16, default="expected")
    file_version = peewee.IntegerField()
    cropping_version = peewee.IntegerField(default=0)
    setting_version = peewee.IntegerField(default=0)
    path = peewee.CharField(max_length=255, null=True)
    size_bytes = peewee.BigIntegerField(null=True)
    planned_at = peewee.DateTimeField()
    built_at = peewee.DateTimeField(null=True)
    expires_at = peewee.DateTimeField(null=True, index=True)
    failure = peewee.CharField(max_length=32, null=True)
    error = peewee.TextField(null=True)

    class Meta:
        indexes = (
            (
                ("file_id", "cropping_id", "setting_id", "custom_id", "output_format"),
                True,
            ),
            (("state", "file_id"), False),
            (("cropping_id",), False),
            (("setting_id",), False),
            (("custom_id",), False),
        )


class PublishedFile(BaseModel):
    """A copy of a file published under the published root, optionally until `expires_at`."""

    id = peewee.AutoField()
    file = peewee.ForeignKeyField(File, backref="published_files", on_delete="CASCADE")
    cropping_id = peewee.IntegerField(null=True)
    setting_id = peewee.IntegerField(null=True)
    path = peewee.CharField(max_length=700)
    published_at = peewee.DateTimeField()
    expires_at = peewee.DateTimeField(null=True, index=True)


class JobStatus(BaseModel):
    """One run of one job, from enqueued to finished; `updated_at` is its heartbeat."""

    id = peewee.AutoField()
    job = peewee.CharField(max_length=64)
    state = peewee.CharField(max_length=32)
    trigger = peewee.CharField(max_length=16)
    host = peewee.CharField(max_length=255, null=True)
    pid = peewee.IntegerField(null=True)
    enqueued_at = peewee.DateTimeField(null=True)
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField(index=True)
    total = peewee.IntegerField(null=True)
    processed = peewee.IntegerField(default=0)
    failed = peewee.IntegerField(default=0)
    skipped = peewee.IntegerField(default=0)
    message = peewee.TextField(null=True)
    summary = peewee.TextField(null=True)

    class Meta:
        indexes = ((("job", "id"), False),)


class JobSlot(BaseModel):
    """
    The claim on one job: at most one enqueued or running run per job across all hosts.

    `status_id` names the run that owns the slot and serves as the compare-and-set token.
    """

    job = peewee.CharField(max_length=64, primary_key=True)
    state = peewee.CharField(max_length=16)
    status_id = peewee.IntegerField()
    host = peewee.CharField(max_length=255, null=True)
    pid = peewee.IntegerField(null=True)
    updated_at = peewee.DateTimeField()
    rerun_requested = peewee.BooleanField(default=False)


class LogItem(BaseModel):
    """A warning or error that a run recorded in the database."""

    id = peewee.AutoField()
    created_at = peewee.DateTimeField(index=True)
    level = peewee.CharField(max_length=16)
    job = peewee.CharField(max_length=64, null=True)
    status_id = peewee.IntegerField(null=True, index=True)
    file_id = peewee.IntegerField(null=True)
    message = peewee.TextField()


class SearchChange(BaseModel):
    """
    A change that a running index rebuild must index again: one file, or every file under
    one folder. Database triggers write these rows; rebuild-index reads and deletes them.
    """

    id = peewee.BigAutoField()
    file_id = peewee.IntegerField(null=True)
    folder_id = peewee.IntegerField(null=True)
    changed_at = peewee.DateTimeField(index=True)


class PlanChange(BaseModel):
    """
    A change to a file, cropping or predefined setting that precache has not planned yet.
    Database triggers write these rows; precache reads their maximum id and deletes them.
    """

    id = peewee.BigAutoField()
    changed_at = peewee.DateTimeField()


class PlanState(BaseModel):
    """
    The last completed plan of precache: the highest `plan_change` id it covered and the
    default output format it used. The table has at most one row, with id 1.
    """

    id = peewee.IntegerField(primary_key=True)
    last_change_id = peewee.BigIntegerField()
    default_output_format = peewee.CharField(max_length=16)
    planned_at = peewee.DateTimeField()


class SchemaMigration(BaseModel):
    """One applied migration."""

    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=191)
    applied_at = peewee.DateTimeField()


ALL_MODELS = (
    Folder,
    File,
    FileDescription,
    Tag,
    FileTag,
    Attribute,
    Cropping,
    PredefinedSetting,
    SettingStep,
    CustomTransformation,
    CacheEntry,
    PublishedFile,
    JobStatus,
    JobSlot,
    LogItem,
    SearchChange,
    PlanChange,
    PlanState,
    SchemaMigration,
)
