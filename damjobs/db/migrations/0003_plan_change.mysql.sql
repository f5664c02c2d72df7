-- Log of changes that can alter which cache entries precache plans, with their versions
-- and output formats, plus the state of the last plan. Triggers on file, cropping and
-- predefined_setting write one row per changed row, whatever column changed, so a
-- precache run can skip planning when no row arrived since its last plan.
-- MariaDB does not fire triggers for rows that a foreign key cascade deletes. The only
-- such rows here are the croppings of a deleted file, and the file's own delete is logged.
-- Several triggers for the same table and event need MariaDB 10.2.3 or MySQL 5.7.2.
-- Never edit an applied migration: add a new numbered one.

CREATE TABLE `plan_change` (`id` BIGINT AUTO_INCREMENT NOT NULL PRIMARY KEY, `changed_at` DATETIME NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE `plan_state` (`id` INTEGER NOT NULL PRIMARY KEY, `last_change_id` BIGINT NOT NULL, `default_output_format` VARCHAR(16) NOT NULL, `planned_at` DATETIME NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TRIGGER `plan_change_file_insert` AFTER INSERT ON `file` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_file_update` AFTER UPDATE ON `file` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_file_delete` AFTER DELETE ON `file` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_cropping_insert` AFTER INSERT ON `cropping` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_cropping_update` AFTER UPDATE ON `cropping` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_cropping_delete` AFTER DELETE ON `cropping` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_predefined_setting_insert` AFTER INSERT ON `predefined_setting` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_predefined_setting_update` AFTER UPDATE ON `predefined_setting` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
CREATE TRIGGER `plan_change_predefined_setting_delete` AFTER DELETE ON `predefined_setting` FOR EACH ROW INSERT INTO `plan_change` (`changed_at`) VALUES (UTC_TIMESTAMP());
