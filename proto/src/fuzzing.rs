//! Fuzzing helpers (filled in below).
