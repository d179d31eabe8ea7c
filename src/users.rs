//! Users file (to be written).
