-- Log of changes that can alter which cache entries precache plans, with their versions
-- and output formats, plus the state of the last plan. Triggers on file, cropping and
-- predefined_setting write one row per changed row, whatever column changed, so a
-- precache run can skip planning when no row arrived since its last plan.
-- AUTOINCREMENT keeps ids rising even after the rows with the highest ids are deleted.
-- Never edit an applied migration: add a new numbered one.

CREATE TABLE "plan_change" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "changed_at" DATETIME NOT NULL);
CREATE TABLE "plan_state" ("id" INTEGER NOT NULL PRIMARY KEY, "last_change_id" INTEGER NOT NULL, "default_output_format" VARCHAR(16) NOT NULL, "planned_at" DATETIME NOT NULL);

CREATE TRIGGER "plan_change_file_insert" AFTER INSERT ON "file" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_file_update" AFTER UPDATE ON "file" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_file_delete" AFTER DELETE ON "file" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_cropping_insert" AFTER INSERT ON "cropping" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_cropping_update" AFTER UPDATE ON "cropping" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_cropping_delete" AFTER DELETE ON "cropping" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_predefined_setting_insert" AFTER INSERT ON "predefined_setting" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_predefined_setting_update" AFTER UPDATE ON "predefined_setting" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
CREATE TRIGGER "plan_change_predefined_setting_delete" AFTER DELETE ON "predefined_setting" FOR EACH ROW BEGIN INSERT INTO "plan_change" ("changed_at") VALUES (datetime('now')); END;
