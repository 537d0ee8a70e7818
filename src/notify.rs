//! The child side of all three protocols: one call that speaks whichever the
//! parent offered. Placeholder, completed in issue 4.
