-- Every insert carries a key unique to its request. When the session dies mid-INSERT the
-- app cannot know whether the row was committed; running the same INSERT again on a new
-- connection with the same key finds the committed row instead of adding a second one.
ALTER TABLE notes ADD COLUMN IF NOT EXISTS request_key uuid UNIQUE;
