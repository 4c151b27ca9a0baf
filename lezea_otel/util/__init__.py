"""Small helpers both sides use: readable text, value shaping, never-raise guards."""
