-- An `hz run` job's own part (its command, hosts, terminal, how it ended) as JSON; NULL for
-- a batch project. A job is a project of one fragment named `run:N`.
ALTER TABLE projects ADD COLUMN job TEXT;
