-- Log of changes that a running index rebuild must index again before and after its swap.
-- Triggers write one row per changed file (or per changed folder), so changes to tags,
-- attributes, descriptions and croppings count as changes to their file. MariaDB does not
-- fire triggers for rows that a foreign key cascade deletes, so tag and folder deletes log
-- the affected rows themselves. Creating triggers needs the TRIGGER privilege, and with
-- binary logging on also SUPER or log_bin_trust_function_creators = 1. Never edit an
-- applied migration: add a new numbered one.

CREATE TABLE `search_change` (`id` BIGINT AUTO_INCREMENT NOT NULL PRIMARY KEY, `file_id` INTEGER, `folder_id` INTEGER, `changed_at` DATETIME NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE INDEX `search_change_changed_at` ON `search_change` (`changed_at`);

CREATE TRIGGER `search_change_file_insert` AFTER INSERT ON `file` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_update` AFTER UPDATE ON `file` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_delete` AFTER DELETE ON `file` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (OLD.id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_description_insert` AFTER INSERT ON `file_description` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_description_update` AFTER UPDATE ON `file_description` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP()), (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_description_delete` AFTER DELETE ON `file_description` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_tag_insert` AFTER INSERT ON `file_tag` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_tag_update` AFTER UPDATE ON `file_tag` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP()), (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_file_tag_delete` AFTER DELETE ON `file_tag` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_attribute_insert` AFTER INSERT ON `attribute` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_attribute_update` AFTER UPDATE ON `attribute` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP()), (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_attribute_delete` AFTER DELETE ON `attribute` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_cropping_insert` AFTER INSERT ON `cropping` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_cropping_update` AFTER UPDATE ON `cropping` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (NEW.file_id, UTC_TIMESTAMP()), (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_cropping_delete` AFTER DELETE ON `cropping` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) VALUES (OLD.file_id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_tag_update` AFTER UPDATE ON `tag` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) SELECT `file_id`, UTC_TIMESTAMP() FROM `file_tag` WHERE `tag_id` = NEW.id;
CREATE TRIGGER `search_change_tag_delete` BEFORE DELETE ON `tag` FOR EACH ROW INSERT INTO `search_change` (`file_id`, `changed_at`) SELECT `file_id`, UTC_TIMESTAMP() FROM `file_tag` WHERE `tag_id` = OLD.id;
CREATE TRIGGER `search_change_folder_update` AFTER UPDATE ON `folder` FOR EACH ROW INSERT INTO `search_change` (`folder_id`, `changed_at`) VALUES (NEW.id, UTC_TIMESTAMP());
CREATE TRIGGER `search_change_folder_delete` AFTER DELETE ON `folder` FOR EACH ROW INSERT INTO `search_change` (`folder_id`, `changed_at`) VALUES (OLD.id, UTC_TIMESTAMP());
