-- A path that now passes a stage no longer counts as failed there.
DELETE FROM failures WHERE path = $path AND stage = $stage;
