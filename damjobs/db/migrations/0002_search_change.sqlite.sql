-- Log of changes that a running index rebuild must index again before and after its swap.
-- Triggers write one row per changed file (or per changed folder), so changes to tags,
-- attributes, descriptions and croppings count as changes to their file. Never edit an
-- applied migration: add a new numbered one.

CREATE TABLE "search_change" ("id" INTEGER NOT NULL PRIMARY KEY, "file_id" INTEGER, "folder_id" INTEGER, "changed_at" DATETIME NOT NULL);
CREATE INDEX "search_change_changed_at" ON "search_change" ("changed_at");

CREATE TRIGGER "search_change_file_insert" AFTER INSERT ON "file" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.id, datetime('now')); END;
CREATE TRIGGER "search_change_file_update" AFTER UPDATE ON "file" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.id, datetime('now')); END;
CREATE TRIGGER "search_change_file_delete" AFTER DELETE ON "file" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (OLD.id, datetime('now')); END;
CREATE TRIGGER "search_change_file_description_insert" AFTER INSERT ON "file_description" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_file_description_update" AFTER UPDATE ON "file_description" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')), (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_file_description_delete" AFTER DELETE ON "file_description" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_file_tag_insert" AFTER INSERT ON "file_tag" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_file_tag_update" AFTER UPDATE ON "file_tag" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')), (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_file_tag_delete" AFTER DELETE ON "file_tag" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_attribute_insert" AFTER INSERT ON "attribute" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_attribute_update" AFTER UPDATE ON "attribute" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')), (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_attribute_delete" AFTER DELETE ON "attribute" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_cropping_insert" AFTER INSERT ON "cropping" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_cropping_update" AFTER UPDATE ON "cropping" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (NEW.file_id, datetime('now')), (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_cropping_delete" AFTER DELETE ON "cropping" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") VALUES (OLD.file_id, datetime('now')); END;
CREATE TRIGGER "search_change_tag_update" AFTER UPDATE ON "tag" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") SELECT "file_id", datetime('now') FROM "file_tag" WHERE "tag_id" = NEW.id; END;
CREATE TRIGGER "search_change_tag_delete" BEFORE DELETE ON "tag" FOR EACH ROW BEGIN INSERT INTO "search_change" ("file_id", "changed_at") SELECT "file_id", datetime('now') FROM "file_tag" WHERE "tag_id" = OLD.id; END;
CREATE TRIGGER "search_change_folder_update" AFTER UPDATE ON "folder" FOR EACH ROW BEGIN INSERT INTO "search_change" ("folder_id", "changed_at") VALUES (NEW.id, datetime('now')); END;
CREATE TRIGGER "search_change_folder_delete" AFTER DELETE ON "folder" FOR EACH ROW BEGIN INSERT INTO "search_change" ("folder_id", "changed_at") VALUES (OLD.id, datetime('now')); END;
