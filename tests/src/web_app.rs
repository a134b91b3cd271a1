//! Spawns the real web-app binary for end-to-end tests (filled in by the web-app issue).
