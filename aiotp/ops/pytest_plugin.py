"""aiotp's pytest plugin (entry point ``pytest11``): fixtures for testing code built on aiotp."""
