//! The Phoenix store (lands with Foundation 2).
