"""A vendor dispatcher: one deployment per vendor delivers that vendor's change events."""
