-- ResetInstance: how many times an instance's system disk was reinstalled.
-- Agents compare it with the count they applied and rebuild the system disk
-- (a VM's overlay, a container's writable layer) from the image before the
-- next boot.

ALTER TABLE instances ADD COLUMN reset_seq BIGINT NOT NULL DEFAULT 0;
