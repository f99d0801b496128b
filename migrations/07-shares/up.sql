-- A project's weight in the fair share (`hz action --share N`, `hz share P N`).
ALTER TABLE projects ADD COLUMN share INTEGER NOT NULL DEFAULT 1;
