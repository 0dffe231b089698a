-- The TAT command library (CreateCommand, ModifyCommand, DeleteCommand,
-- InvokeCommand). An invocation keeps what it ran — content, type, working
-- directory, timeout, user — so that ModifyCommand changes a saved command
-- and never the record of a past run. DeleteCommand only takes a command out
-- of the library (saved = 0): past invocations still show its name.

ALTER TABLE commands ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE commands SET updated_at = created_at;
CREATE INDEX commands_library ON commands(app_id, saved);

ALTER TABLE invocations ADD COLUMN content TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN command_type TEXT NOT NULL DEFAULT 'SHELL';
ALTER TABLE invocations ADD COLUMN working_directory TEXT NOT NULL DEFAULT '/root';
ALTER TABLE invocations ADD COLUMN timeout_s BIGINT NOT NULL DEFAULT 60;
ALTER TABLE invocations ADD COLUMN username TEXT NOT NULL DEFAULT 'root';
UPDATE invocations SET
    content = (SELECT c.content FROM commands c WHERE c.command_id = invocations.command_id),
    command_type = (SELECT c.command_type FROM commands c WHERE c.command_id = invocations.command_id),
    working_directory = (SELECT c.working_directory FROM commands c WHERE c.command_id = invocations.command_id),
    timeout_s = (SELECT c.timeout_s FROM commands c WHERE c.command_id = invocations.command_id),
    username = (SELECT c.username FROM commands c WHERE c.command_id = invocations.command_id)
WHERE EXISTS (SELECT 1 FROM commands c WHERE c.command_id = invocations.command_id);

-- Names are unique within a library. RunCommand's SaveCommand did not check
-- before: of saved commands sharing a name, the newest stays saved.
UPDATE commands SET saved = 0
WHERE saved = 1 AND EXISTS (
    SELECT 1 FROM commands c2
    WHERE c2.app_id = commands.app_id AND c2.name = commands.name AND c2.saved = 1
      AND (c2.created_at > commands.created_at
           OR (c2.created_at = commands.created_at AND c2.command_id > commands.command_id))
);
CREATE UNIQUE INDEX commands_library_name ON commands(app_id, name) WHERE saved = 1;
