"""Result records and their renderers (pure functions from records to output)."""
