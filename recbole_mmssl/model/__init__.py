"""The plugin's models; MMSSL and its parts."""
